"""Decoded-image cache that cannot go stale.

Entries are keyed by ``(absolute path, file size, mtime in ns)``. Every lookup stats the file (a few
microseconds), so an image that is replaced or edited on disk gets a new key and is decoded again; the old
entry is simply never hit. Two backends:

- ``"ram"``: a dict in the process. Fill it before the DataLoader starts its workers (``warm()``) and the
  forked workers share the decoded pages copy-on-write instead of each decoding again.
- Derived forms (:meth:`ImageCache.get_derived`, RAM only): what a consumer computes from a decoded image
  (training keeps each image resized to fit the input size as RGBA) is kept *instead of* the decoded
  image, under the same never-stale key plus a tag.
- ``"disk"``: one ``.npy`` per image under ``directory`` (default ``~/.cache/cspdet/images``), named by a
  hash of the key and memory-mapped on read. Writes are atomic (temp file + ``os.replace``), so a crash
  cannot leave a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np

from .image_io import read_image

__all__ = ["ImageCache", "available_memory", "cache_key"]


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping: the kernel's ``MemAvailable``, or less when a
    cgroup (container) limit leaves less; None where neither is known (not Linux)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2: the container's limit minus what it already uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available


def cache_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(absolute path, size in bytes, mtime in ns)``; raises FileNotFoundError for a missing file."""
    path = os.path.abspath(path)
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


class ImageCache:
    """Decoded images ((H, W, 3) uint8 RGB) keyed by path, size and mtime.

    Args:
        mode: ``"ram"`` or ``"disk"``.
        directory: where the disk backend keeps its ``.npy`` files.
        loader: decodes a path (default :func:`cspdet.data.image_io.read_image`).
    """

    def __init__(
        self,
        mode: str = "ram",
        directory: str | os.PathLike | None = None,
        loader: Callable[[str], np.ndarray] = read_image,
    ):
        if mode not in ("ram", "disk"):
            raise ValueError(f"cache mode must be 'ram' or 'disk', got {mode!r}")
        self.mode = mode
        self.loader = loader
        self._ram: dict[tuple[str, int, int], np.ndarray] = {}
        self._derived: dict[tuple[tuple[str, int, int], Hashable], Any] = {}
        self.directory = Path(directory or Path.home() / ".cache" / "cspdet" / "images")
        if mode == "disk":
            self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _disk_path(self, key: tuple[str, int, int]) -> Path:
        digest = hashlib.sha1(repr(key).encode("utf-8")).hexdigest()
        return self.directory / digest[:2] / f"{digest}.npy"

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """The decoded image, from the cache when its key (path, size, mtime) is unchanged.

        The returned array must be treated as read-only (it is shared with later lookups).
        """
        try:
            key = cache_key(path)
        except FileNotFoundError:
            return self.loader(str(path))  # the loader raises its precise "not found" error
        if self.mode == "ram":
            image = self._ram.get(key)
            if image is None:
                self.misses += 1
                image = self.loader(str(path))
                image.flags.writeable = False
                self._ram[key] = image
            else:
                self.hits += 1
            return image
        file = self._disk_path(key)
        if file.is_file():
            try:
                image = np.load(file, mmap_mode="r")
                self.hits += 1
                return image
            except (OSError, ValueError):
                pass  # unreadable entry (e.g. disk full earlier): decode again and overwrite it
        self.misses += 1
        image = self.loader(str(path))
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, image)
            os.replace(tmp, file)
        except OSError:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return image

    def get_derived(self, path: str | os.PathLike, tag: Hashable, make: Callable[[np.ndarray], Any]) -> Any:
        """``make(image)`` for the decoded image of ``path``, kept (RAM mode) under the image's key and
        ``tag``, so it is computed once per run instead of once per use. Treat the result as read-only.

        Why: training uses each image in one derived form only (resized to fit the input, 4 channels) and
        otherwise re-derives it every epoch; keeping that form is what Ultralytics' RAM cache does too (it
        stores images resized to the input size). To hold each image once, storing a derived form drops the
        decoded image from the cache (a later :meth:`get` decodes it again, counted as a miss). Derived
        forms never go stale: a changed file has a new key. The disk backend stores no derived forms
        (``make(self.get(path))`` each time). A ``make`` that raises stores nothing.
        """
        if self.mode != "ram":
            return make(self.get(path))
        try:
            key = cache_key(path)
        except FileNotFoundError:
            return make(self.loader(str(path)))  # the loader raises its precise "not found" error
        value = self._derived.get((key, tag))
        if value is None:
            value = make(self.get(path))
            self._derived[(key, tag)] = value
            self._ram.pop(key, None)
        else:
            self.hits += 1
        return value

    def warm(self, paths: list[str], on_error: Callable[[str, Exception], None] | None = None) -> None:
        """Decode every path now (e.g. in the main process before workers fork)."""
        for path in paths:
            try:
                self.get(path)
            except OSError as err:
                if on_error is None:
                    raise
                on_error(path, err)

    def __len__(self) -> int:
        """Entries held: decoded images plus derived forms (RAM), or ``.npy`` files (disk)."""
        if self.mode == "ram":
            return len(self._ram) + len(self._derived)
        return sum(1 for _ in self.directory.rglob("*.npy"))

    def nbytes(self) -> int:
        """Bytes of the arrays held in RAM (derived forms: the arrays they contain)."""

        def size(value: Any) -> int:
            if isinstance(value, np.ndarray):
                return value.nbytes
            if isinstance(value, (tuple, list)):
                return sum(size(v) for v in value)
            return 0

        return sum(a.nbytes for a in self._ram.values()) + sum(size(v) for v in self._derived.values())
