"""Files a run writes: atomic replacement, and faults of the machine as one-line errors.

Every file cspdet rewrites (checkpoints, ``results.csv``, ``config.yaml``, ``metrics.json``,
``detections.json``, PR curves, ...) goes through :func:`atomic_write`: the content is written to a temporary
file in the same directory (``.NAME.XXXXXXXX.tmp``), flushed and fsync'ed, then renamed over the target. A
kill at any moment leaves either the previous file or the new one, never a truncated mix, and a failed write
removes its temporary file.

A write that fails because of the machine (disk full, read-only file system, no permission, ...) raises
:class:`OutputError`, whose message is one line naming the path and saying what happened::

    disk full while saving runs/train/exp/last.pt; the previous last.pt is intact
    cannot write runs/train/exp: read-only file system

The command-line tools print it as it is and exit non-zero. Like :mod:`cspdet.config`, this module uses only
the standard library, so every layer can depend on it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

__all__ = ["OutputError", "TEMP_PATTERN", "as_output_error", "atomic_write", "make_dirs", "remove_stale_temps"]

# What a write killed before its rename leaves behind (see atomic_write); never read, safe to delete.
TEMP_PATTERN = ".*.tmp"

Content = Union[bytes, str, Callable[[BinaryIO], Any]]

# errno -> how the message names it
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputError(OSError):
    """A file or directory that could not be written; ``str(err)`` is one line naming the path and the cause.

    Attributes:
        path: the file or directory that was being written.
        errno: the errno of the underlying ``OSError`` (``ENOSPC``, ``EROFS``, ...), when known.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, code: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(err: OSError) -> str:
    if err.errno in _REASONS:
        return _REASONS[err.errno]
    text = err.strerror or str(err) or type(err).__name__
    return text[:1].lower() + text[1:]


def as_output_error(err: OSError, path: str | os.PathLike | None = None,
                    previous_intact: bool = False) -> OutputError:
    """The :class:`OutputError` for ``err`` raised while writing ``path`` (default: ``err.filename``).

    ``previous_intact``: a previous version of ``path`` exists and was left untouched (atomic writes).
    """
    if isinstance(err, OutputError):
        return err
    target = path if path is not None else (err.filename or "output")
    name = Path(target).name
    if err.errno in _FULL:
        tail = f"the previous {name} is intact" if previous_intact else "no partial file was left"
        message = f"{_reason(err)} while saving {target}; {tail}"
    else:
        message = f"cannot write {target}: {_reason(err)}"
        if previous_intact:
            message += f"; the previous {name} is intact"
    return OutputError(message, target, err.errno)


def make_dirs(directory: str | os.PathLike) -> Path:
    """``mkdir -p directory``; raises :class:`OutputError` (naming ``directory``) when it cannot be created."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if isinstance(err, FileExistsError) and not directory.is_dir():
            raise OutputError(f"cannot write {directory}: a file of that name is in the way", directory,
                              err.errno) from None
        raise as_output_error(err, directory) from None
    return directory


class _Writer:
    """The temp file as handed to a content callable: remembers the ``OSError`` of a failed write, because some
    writers (``torch.save``) report it as their own ``RuntimeError`` without the errno."""

    def __init__(self, fh: BinaryIO, name: str):
        self._fh = fh
        self.name = name  # the temporary file's path
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._fh.flush()

    def __getattr__(self, attr: str) -> Any:  # tell, seek, fileno, ... of the real file
        return getattr(self._fh, attr)


def _commit(tmp: str, path: Path) -> None:
    """The rename that publishes a finished write (a separate function so tests can interrupt just here)."""
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, content: Content, encoding: str = "utf-8") -> Path:
    """Write ``path`` atomically: temp file in the same directory, fsync, rename over ``path``, fsync the directory.

    Args:
        path: the file to (re)write; missing parent directories are created.
        content: ``bytes``, ``str`` (encoded with ``encoding``), or a callable that writes to the binary file
            object it is given (e.g. ``lambda fh: torch.save(obj, fh)``).

    Raises:
        OutputError: the file system refused (disk full, read-only, permissions, ...); the previous ``path``
            (if any) is intact and no temporary file is left.
        Any error ``content`` raises (also with the temporary file removed and ``path`` untouched).
    """
    path = Path(path)
    make_dirs(path.parent)
    existed = path.exists()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise as_output_error(err, path, existed) from None
    writer = None
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _Writer(fh, tmp)
            if callable(content):
                content(writer)
            else:
                writer.write(content.encode(encoding) if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file owner-only (0600); give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _commit(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        # an OSError of the file system itself (it has an errno), or the one a writer turned into its own error
        cause = err if isinstance(err, OSError) else (writer.error if writer is not None else None)
        if cause is not None and cause.errno is not None and not isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise as_output_error(cause, path, existed) from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk; not all platforms allow this.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temp files that writes killed before their rename left in ``directory``; returns how many."""
    n = 0
    for stale in Path(directory).glob(TEMP_PATTERN):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            n += 1
    return n
