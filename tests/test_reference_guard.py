"""The CI guard (tests/reference_guard.py, registered by tests/conftest.py): under CSPDET_REQUIRE_REFERENCES=1 (set by ``make test``) a test skipped
because a reference package is missing is a failure naming the package; other skips stay skips."""

from __future__ import annotations

import pytest
from _pytest.reports import TestReport

import reference_guard as conftest  # tests/reference_guard.py


def _skip_report(reason: str) -> TestReport:
    return TestReport("tests/x.py::test_x", ("tests/x.py", 1, "test_x"), {}, "skipped",
                      ("tests/x.py", 3, f"Skipped: {reason}"), "setup")


@pytest.mark.parametrize("reason, package", [
    ("reference YOLOX not installed (optional; see this module's docstring)", "yolox"),
    ("YOLOX is not installed: reference CSPDarknet unavailable", "yolox"),
    ("could not import 'timm': No module named 'timm'", "timm"),
    ("optional faster-coco-eval is not installed", "faster_coco_eval"),
    ("the export extra is not installed (pip install 'cspdet[export]')", "onnxruntime"),
    ("could not import 'nncf': No module named 'nncf'", "nncf"),
])
def test_a_reference_skip_fails_under_ci(monkeypatch, reason, package):
    monkeypatch.setattr(conftest, "REQUIRE_REFERENCES", True)
    report = _skip_report(reason)
    conftest.fail_reference_skip(report)
    assert report.failed and f"reference package {package!r} is required" in str(report.longrepr)
    assert reason in str(report.longrepr)


def test_other_skips_and_local_runs_stay_skips(monkeypatch):
    monkeypatch.setattr(conftest, "REQUIRE_REFERENCES", True)
    report = _skip_report("real COCO sample not found at /x/coco128 (set CSPDET_COCO128 or provide ../shared)")
    conftest.fail_reference_skip(report)
    assert report.skipped
    monkeypatch.setattr(conftest, "REQUIRE_REFERENCES", False)
    report = _skip_report("reference YOLOX not installed")
    conftest.fail_reference_skip(report)
    assert report.skipped


def test_every_reference_is_installed_where_ci_requires_it():
    """Under ``make test`` the session would have stopped already; this names the package if it did not."""
    import importlib.util

    if not conftest.REQUIRE_REFERENCES:
        pytest.skip("CSPDET_REQUIRE_REFERENCES is not set (a local run)")
    assert [n for n in conftest.REFERENCES if importlib.util.find_spec(n) is None] == []
