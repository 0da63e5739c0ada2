"""Bookkeeping for bad dataset input: one precise message per problem, counted by kind.

Readers never crash on a single bad file. Each problem becomes a :class:`DatasetProblem` that names the
file (and line or annotation id) and says what is wrong. In the default mode the bad image or box is
skipped with a :class:`DatasetWarning`; in strict mode the same message is raised as a
:class:`DatasetError`. A :class:`ProblemReport` keeps every problem so that a summary ("skipped 3 images,
7 boxes") can be printed at the end of loading and ``cspdet check`` can list them all.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "DatasetProblem",
    "ProblemReport",
    "PROBLEM_KINDS",
]

# kind -> what it costs: "image" (whole sample skipped), "box" (one box skipped), "fixed" (repaired,
# nothing lost, e.g. a box clipped to the image), "fatal" (the split cannot be used at all).
PROBLEM_KINDS: dict[str, str] = {
    "missing_image": "image",
    "unreadable_image": "image",
    "truncated_image": "image",
    "duplicate_image": "image",
    "bad_image_entry": "image",
    "path_outside_dataset": "image",  # an annotation file's image path leads outside the dataset (see records.py)
    "missing_annotation_file": "image",
    "malformed_annotation_file": "image",
    "orphan_label_file": "fixed",  # a YOLO label file without an image: nothing to train on, reported only
    "size_mismatch": "fixed",
    "bad_box": "box",
    "box_outside_image": "box",
    "box_clipped": "fixed",
    "unknown_category": "box",
    "unknown_image_ref": "box",
    "duplicate_annotation": "box",  # a repeated annotation id (COCO)
    "duplicate_box": "box",  # the same class and box again in the same image (records.drop_duplicate_boxes)
    "malformed_line": "box",
    "malformed_file": "fatal",
    "missing_folder": "fatal",  # a folder the descriptor names (e.g. a split's images) does not exist
    "empty_dataset": "fatal",
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DATA = os.sep.join(("torch", "utils", "data", ""))


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` made by the caller of this function that attributes the
    warning to the first frame outside ``cspdet/data`` (the user's or the trainer's line), not to ours."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or _TORCH_DATA in frame.f_code.co_filename
    ):  # also skip the DataLoader's fetch frames, which call our datasets
        frame, level = frame.f_back, level + 1
    return level


# How many individual warnings per kind are shown while loading; the rest are only counted.
MAX_WARNINGS_PER_KIND = 10


class DatasetError(ValueError):
    """Bad dataset input in strict mode, or input that makes a split unusable (one-line message)."""


class DatasetWarning(UserWarning):
    """A skipped image or box, or a repaired box, while reading a dataset."""


@dataclass(frozen=True)
class DatasetProblem:
    """One problem: ``kind`` (a key of PROBLEM_KINDS), ``source`` (file[:line]) and ``message``."""

    kind: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{_printable(self.source)}: {_printable(self.message)} [{self.kind}]"


def _printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name from an annotation file) escaped, so a
    warning or error stays one line that names the file unambiguously."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass
class ProblemReport:
    """All problems found while reading one split (and later while loading its images).

    Args:
        strict: raise :class:`DatasetError` on the first problem instead of skipping.
        name: what is being read (shown in the summary), e.g. ``"coco128 train"``.
        warn: emit a :class:`DatasetWarning` per problem (capped per kind, see MAX_WARNINGS_PER_KIND).
    """

    strict: bool = False
    name: str = "dataset"
    warn: bool = True
    problems: list[DatasetProblem] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _shown: Counter = field(default_factory=Counter, repr=False, compare=False)

    def add(self, kind: str, source: str, message: str) -> DatasetProblem:
        """Record a problem; raise it in strict mode (or when it is fatal), else warn."""
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}")
        problem = DatasetProblem(kind, str(source), message)
        if self.strict or PROBLEM_KINDS[kind] == "fatal":
            raise DatasetError(str(problem))
        with self._lock:
            self.problems.append(problem)
            self._shown[kind] += 1  # a counter, not a scan of every problem so far (O(n^2) on big sets)
            shown = self._shown[kind]
        if self.warn and shown <= MAX_WARNINGS_PER_KIND:
            suffix = "" if PROBLEM_KINDS[kind] == "fixed" else " (skipped)"
            if shown == MAX_WARNINGS_PER_KIND:
                suffix += f"; further '{kind}' problems are only counted"
            warnings.warn(f"{problem}{suffix}", DatasetWarning, stacklevel=user_stacklevel())
        return problem

    @property
    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(Counter(p.kind for p in self.problems))

    @property
    def skipped_images(self) -> int:
        return sum(1 for p in self.problems if PROBLEM_KINDS[p.kind] == "image")

    @property
    def skipped_boxes(self) -> int:
        return sum(1 for p in self.problems if PROBLEM_KINDS[p.kind] == "box")

    @property
    def fixed(self) -> int:
        return sum(1 for p in self.problems if PROBLEM_KINDS[p.kind] == "fixed")

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:  # a report is "truthy" only when something went wrong
        return bool(self.problems)

    def summary(self, hint: str | None = None) -> str:
        """One line: ``"coco128 train: skipped 3 images, 7 boxes; fixed 2 (missing_image=3, ...)"``."""
        if not self.problems:
            return f"{self.name}: no problems"
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.counts.items()))
        text = (
            f"{self.name}: skipped {self.skipped_images} images, {self.skipped_boxes} boxes; "
            f"fixed {self.fixed} ({kinds})"
        )
        return f"{text}: see {hint}" if hint else text

    def merge(self, other: "ProblemReport") -> None:
        with self._lock:
            self.problems.extend(other.problems)
