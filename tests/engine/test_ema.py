"""ModelEMA: YOLOX ramp, buffers, state round trip."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from cspdet.engine.ema import ModelEMA, unwrap_model


def test_ema_update_follows_yolox_ramp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = ModelEMA(model, decay=0.9998, tau=2000)
    start = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(8, 4))  # moves BN running stats and num_batches_tracked
    ema.update(model)
    d = 0.9998 * (1 - math.exp(-1 / 2000))
    assert ema.current_decay() == pytest.approx(d)
    new = model.state_dict()
    got = ema.ema.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
        assert torch.allclose(got[key], d * start[key] + (1 - d) * new[key], atol=1e-6), key
    assert got["1.num_batches_tracked"] == new["1.num_batches_tracked"] == 1  # integers are copied
    assert ema.updates == 1
    # the ramp approaches the nominal decay
    ema.updates = 100_000
    assert ema.current_decay() == pytest.approx(0.9998, rel=1e-9)


def test_ema_is_frozen_eval_copy_and_tracks_ddp_module():
    model = nn.Linear(2, 2)
    ema = ModelEMA(model)
    assert not ema.ema.training
    assert all(not p.requires_grad for p in ema.ema.parameters())
    assert ema.ema is not model and ema.ema.weight.data_ptr() != model.weight.data_ptr()
    wrapped = nn.DataParallel(model)
    assert unwrap_model(wrapped) is model and unwrap_model(model) is model
    ema.update(wrapped)  # wrapper accepted
    assert ema.updates == 1


def test_ema_state_dict_roundtrip_weights_only():
    torch.manual_seed(1)
    model = nn.Linear(3, 3)
    ema = ModelEMA(model, decay=0.999, tau=10)
    for _ in range(5):
        with torch.no_grad():
            model.weight.add_(0.1)
        ema.update(model)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = ModelEMA(nn.Linear(3, 3))
    other.load_state_dict(state)
    assert other.updates == 5 and other.decay == 0.999 and other.tau == 10
    assert torch.equal(other.ema.weight, ema.ema.weight)
