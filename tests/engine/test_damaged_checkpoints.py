"""A checkpoint's spec is data from a file: damaged sizes are one-line CheckpointErrors, found before any large
network is allocated (issue 24's fuzzer hung for minutes building a network of 2**31 channels)."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from cspdet.runtime.weights import detector_from_checkpoint
from cspdet.runtime.checkpoint import CheckpointError, new_checkpoint, save_checkpoint
from cspdet.models import DetectorMeta, create_detector


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    model = create_detector("cspdarknet_nano", num_classes=2, width=0.125)
    meta = DetectorMeta(["a", "b"], [1, 2], img_size=(64, 64))
    return new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict())


def _save(ckpt, tmp_path):
    return save_checkpoint(ckpt, tmp_path / "damaged.pt")


@pytest.mark.parametrize("damage, match", [
    (lambda c: c["spec"]["backbone"]["stages"][0].update(num_blocks=2**31), r"num_blocks = 2147483648 is out of range"),
    (lambda c: c["spec"]["backbone"]["stages"][1].update(out_channels=2**31), r"out_channels = 2147483648 is out of"),
    (lambda c: c["spec"]["backbone"]["stages"][1].update(out_channels=4096), r"weights do not fit .* has shape"),
    (lambda c: c["spec"]["head"].update(num_classes=7), r"weights do not fit .* has shape"),
    (lambda c: c["meta"].update(strides=[float("inf")] * 3), r"cannot convert float infinity"),
    (lambda c: c["meta"].update(img_size=[10**6, 10**6]), r"img_size: expected .* ints in 1\.\.8192"),
    (lambda c: c["model"].update(extra=torch.zeros(1)), r"unexpected: extra"),
    (lambda c: c.update(model={"w": "not a tensor"}), r"'model' must map parameter names to tensors"),
])
def test_damaged_spec_is_one_line_and_fast(good, tmp_path, damage, match):
    ckpt = copy.deepcopy(good)
    damage(ckpt)
    path = _save(ckpt, tmp_path)
    tic = time.perf_counter()
    with pytest.raises(CheckpointError, match=match) as err:
        detector_from_checkpoint(path)
    assert time.perf_counter() - tic < 10
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_good_checkpoint_still_loads_exactly(good, tmp_path):
    model, _ = detector_from_checkpoint(_save(good, tmp_path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, good["model"][k])
