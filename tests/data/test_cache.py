"""The decoded-image cache never serves a stale image."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from cspdet.data import ImageCache


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cache_hits_and_never_stale(tmp_path, mode):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 10, np.uint8))
    cache = ImageCache(mode, directory=tmp_path / "cache")
    first = cache.get(path)
    again = cache.get(path)
    assert cache.misses == 1 and cache.hits == 1 and np.array_equal(first, again)
    # replace the file with a different image of the same size and the same mtime second
    st = os.stat(path)
    cv2.imwrite(str(path), np.full((8, 8, 3), 200, np.uint8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.get(path)[0, 0, 0] == 200 and cache.misses == 2
    if mode == "ram":
        assert not first.flags.writeable  # shared arrays are protected from in-place edits
