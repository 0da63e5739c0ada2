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


def test_derived_forms_are_kept_instead_of_the_image_and_never_stale(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 10, np.uint8))
    cache = ImageCache("ram")
    calls = []

    def make(image):
        calls.append(1)
        return image[:4, :4].copy(), image.shape[:2]

    first = cache.get_derived(path, "small", make)
    again = cache.get_derived(path, "small", make)
    assert again is first and len(calls) == 1 and first[1] == (8, 8)
    assert len(cache) == 1 and cache.nbytes() == 4 * 4 * 3  # the decoded image was dropped for its form
    st = os.stat(path)
    cv2.imwrite(str(path), np.full((8, 8, 3), 200, np.uint8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.get_derived(path, "small", make)[0][0, 0, 0] == 200 and len(calls) == 2
    disk = ImageCache("disk", directory=tmp_path / "cache")  # no derived forms on disk: computed each time
    disk.get_derived(path, "small", make)
    disk.get_derived(path, "small", make)
    assert len(calls) == 4
