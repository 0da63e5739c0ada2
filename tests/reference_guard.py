"""The reference packages CI promises, and the guard that makes a parity test fail instead of skipping without them.

Imported by tests/conftest.py (which registers the hooks) and by tests/test_conftest.py (which tests them); a module
of its own because every test directory has a ``conftest`` module and ``import conftest`` would get any of them.
"""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

# --------------------------------------------------------------------------- reference packages CI promises

# The packages the parity / reference tests compare against, and the patterns that name each in a skip reason.
# They are optional for a developer (the tests skip with a reason), but ``make test`` installs all of them and
# sets CSPDET_REQUIRE_REFERENCES=1: then a missing one stops the session before any test runs, and a test that
# still skips for one of them fails, so a parity test can never pass CI by not running.
REFERENCES: dict[str, tuple[str, str]] = {  # import name -> (pattern in a skip reason, how to install it)
    "yolox": (r"yolox", "pip install loguru tabulate && pip install --no-deps --no-build-isolation yolox==0.3.0"),
    "timm": (r"\btimm\b", "pip install 'cspdet[test]'"),
    "faster_coco_eval": (r"faster[-_]coco[-_]eval", "pip install 'cspdet[test]'"),
    "albumentations": (r"albumentations", "pip install 'cspdet[test]'"),
    "onnxruntime": (r"onnxruntime|export extra", "pip install 'cspdet[export]'"),
    "openvino": (r"openvino", "pip install 'cspdet[export]'"),
    "nncf": (r"\bnncf\b", "pip install 'cspdet[export]'"),
}
REQUIRE_REFERENCES = os.environ.get("CSPDET_REQUIRE_REFERENCES", "") not in ("", "0")


def stop_if_missing() -> None:
    """Under CSPDET_REQUIRE_REFERENCES, stop the session before any test runs when a reference is missing."""
    if not REQUIRE_REFERENCES:
        return
    missing = [name for name in REFERENCES if importlib.util.find_spec(name) is None]
    if missing:
        how = "; ".join(f"{name}: {REFERENCES[name][1]}" for name in missing)
        pytest.exit(f"CSPDET_REQUIRE_REFERENCES=1 but reference package(s) {', '.join(missing)} not installed: the "
                    f"parity tests that need them would skip. Install them ({how}) or unset "
                    "CSPDET_REQUIRE_REFERENCES to run without them.", returncode=3)


def _reference_named(report) -> str | None:
    """The reference package a skip report's reason names, if any."""
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    return next((name for name, (pattern, _) in REFERENCES.items() if re.search(pattern, reason, re.IGNORECASE)),
                None)


def fail_reference_skip(report) -> None:
    name = _reference_named(report) if REQUIRE_REFERENCES and report.skipped else None
    if name is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"REFERENCE TEST SKIPPED UNDER CSPDET_REQUIRE_REFERENCES=1: reference package {name!r} "
                           f"is required here ({REFERENCES[name][1]}); the skip said: {reason}")


class RequireReferences:
    """Skips that name a reference become failures. A plugin registered for the whole session, not a conftest
    hook: conftest hooks only see the nodes below their directory, and a skip raised while a sub-directory's
    conftest imports (tests/export/conftest.py) is reported through that directory's hooks."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        fail_reference_skip(outcome.get_result())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        """A module- or conftest-level ``importorskip`` of a reference skips a whole file or directory at
        collection: an error under CSPDET_REQUIRE_REFERENCES."""
        outcome = yield
        fail_reference_skip(outcome.get_result())
