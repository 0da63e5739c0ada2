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


def test_cache_warm_up_is_estimated_checked_against_free_memory_and_shown(coco_dir, monkeypatch, capsys):
    """data.cache: the RAM the caches will hold is known before decoding (and refused when it does not fit);
    the warm-up before workers fork shows a bar."""
    from cspdet.config import ConfigError, DataConfig
    from cspdet.data import build_dataset, build_train_loader, build_val_loader
    from cspdet.data import cache as cache_module
    from cspdet.data.loader import cache_ram_estimate, check_cache_memory

    train = build_dataset(coco_dir / "dataset.yaml", "train", cache=True)
    val = build_dataset(coco_dir / "dataset.yaml", "train", cache=True)
    # images 64x96, 80x64, 48x48: fitted into 64x64 as RGBA for training, whole RGB for evaluation
    assert cache_ram_estimate(train, (64, 64)) == (43 * 64 + 64 * 51 + 64 * 64) * 4
    assert cache_ram_estimate(val) == (64 * 96 + 80 * 64 + 48 * 48) * 3
    need = cache_ram_estimate(train, (64, 64)) + cache_ram_estimate(val)
    monkeypatch.setattr(cache_module, "available_memory", lambda: 10 * need)
    assert check_cache_memory(train, val, (64, 64)) == "RAM cache of 3 train + 3 val images: ~0.1 MB of 0.8 MB available"
    assert "x 2 processes" in check_cache_memory(train, val, (64, 64), processes=2)
    monkeypatch.setattr(cache_module, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=r"^data.cache: the RAM cache of 3 train \+ 3 val images: .* available; "
                                          r"set data.cache=false"):
        check_cache_memory(train, val, (64, 64))

    capsys.readouterr()
    build_train_loader(train, DataConfig(img_size=[64, 64], workers=1), batch_size=2, seed=0, progress=True)
    build_val_loader(val, (64, 64), batch_size=2, workers=1, progress=True)
    err = capsys.readouterr().err  # tqdm bars of 3 images, removed when done (leave=False)
    assert err.count("cache dataset train:") == 2 and "/3 [" in err
    assert len(train.cache) == 3 and len(val.cache) == 3  # warmed before the workers fork


def test_available_memory_is_known_here():
    from cspdet.data.cache import available_memory

    free = available_memory()
    assert free is None or free > 0
