"""Run directories: where a run writes (``output_dir/name``, ``name-2``, ...), ``--resume`` resolution, and the
lock that lets only one process write a run directory at a time.

The lock is an exclusive ``fcntl.flock`` on ``RUN_DIR/.run.lock``, taken before the run writes anything and
held for the run's life. The kernel releases a flock when its process ends, however it ends (exit, Ctrl-C,
``kill -9``), so a killed run never leaves a stale lock behind: the file stays, the lock does not. The file
holds the owner's pid (written after locking, for the error message only; it is never trusted as the lock).
It is the one file of a run written in place rather than atomically: a rename would give it a new inode, and
a lock on the old one would no longer exclude anybody.
On systems without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from ..fileio import TEMP_PATTERN, as_output_error, make_dirs

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RUN_OUTPUTS",
    "ResumeError",
    "RunBusyError",
    "RunLock",
    "clear_run_outputs",
    "find_resume_checkpoint",
    "holds_run",
    "new_run_dir",
]

LOCK_NAME = ".run.lock"
# Files a previous run leaves in its directory; ``exist_ok`` reuse deletes them (see :func:`clear_run_outputs`).
# Temp files of atomic writes (``.last.pt.XXXX.tmp``, ...) are what a kill -9 mid-write leaves (cspdet.fileio).
RUN_OUTPUTS = ("last.pt", "best.pt", "results.csv", "events.out.tfevents.*", "eval/*", "labels.png",
               "train_batch*.jpg", "results.png", TEMP_PATTERN)


class ResumeError(RuntimeError):
    """A run cannot be resumed (no checkpoint, wrong kind of file, or a changed config)."""


class RunBusyError(RuntimeError):
    """Another process is writing the run directory (it holds the run's lock)."""


def find_resume_checkpoint(resume: str | os.PathLike | bool, output_dir: str | os.PathLike) -> Path:
    """Resolve ``--resume``: a ``last.pt`` file, a run directory, or ``True`` for the newest run's ``last.pt``."""
    if resume is True or resume == "":
        candidates = sorted(Path(output_dir).glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ResumeError(f"--resume: no run with a last.pt under {output_dir}; give the checkpoint path")
        return candidates[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ResumeError(f"--resume: {path} not found")
    return path


def holds_run(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` exists and holds anything besides a run lock file."""
    path = Path(directory)
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def _candidates(output_dir: str | os.PathLike, name: str) -> Iterator[Path]:
    base = Path(output_dir) / name
    yield base
    n = 2
    while True:
        yield base.with_name(f"{name}-{n}")
        n += 1


def new_run_dir(output_dir: str, name: str, exist_ok: bool = False) -> str:
    """``output_dir/name``, or ``name-2``, ``name-3``... when that directory already holds a run or another
    process is setting a run up in it (holds its lock). With ``exist_ok``: ``output_dir/name`` whatever it
    holds (the run clears the previous outputs once it holds the lock, see :func:`clear_run_outputs`)."""
    if exist_ok:
        return str(Path(output_dir) / name)
    for candidate in _candidates(output_dir, name):
        if not holds_run(candidate) and not RunLock(candidate).held_elsewhere():
            return str(candidate)
    raise AssertionError("unreachable")  # pragma: no cover


def clear_run_outputs(run_dir: str | os.PathLike) -> None:
    """Delete what a previous run left in ``run_dir`` (:data:`RUN_OUTPUTS`; other files stay), so
    checkpoints, results rows and TensorBoard curves of two runs never mix."""
    for pattern in RUN_OUTPUTS:
        for old in Path(run_dir).glob(pattern):
            if old.is_file():
                old.unlink()


class RunLock:
    """The exclusive lock of one run directory (see the module docstring).

    ``acquire()`` raises :class:`RunBusyError` when another process holds it; ``release()`` (or the end of
    the process) frees it. A second :class:`RunLock` on the same directory in the same process also counts
    as another holder: flock locks belong to the open file, not to the process.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fh = None

    def _open(self, create: bool):
        try:
            return open(self.path, "a+", encoding="utf-8") if create else open(self.path, encoding="utf-8")
        except OSError as err:
            if create and self.path.is_file() and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                # a read-only run directory: lock the existing file through a read-only descriptor, and let the
                # run's first real write report the fault with its own message
                return open(self.path, encoding="utf-8")
            raise as_output_error(err, self.path.parent) from None

    def _try_lock(self, fh) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self) -> None:
        """Take the lock (creating the directory and the lock file when needed)."""
        if self._fh is not None or fcntl is None:
            return
        make_dirs(self.path.parent)
        fh = self._open(create=True)
        if not self._try_lock(fh):
            fh.close()
            raise RunBusyError(
                f"{self.path.parent}: another process{self._owner()} is writing this run (it holds "
                f"{self.path}); wait for it to end or stop it, or use another train.name"
            )
        if fh.writable():
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
        self._fh = fh

    def held_elsewhere(self) -> bool:
        """Whether another process (or another :class:`RunLock` of this one) holds the lock right now."""
        if self._fh is not None or fcntl is None or not self.path.is_file():
            return False
        try:
            with open(self.path, encoding="utf-8") as fh:
                if not self._try_lock(fh):
                    return True
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                return False
        except OSError:
            return False

    def _owner(self) -> str:
        try:
            pid = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None
