import pytest
import torch

from cspdet.models import CSPStage
from cspdet.models.csp_pan import CSPPAN


def _feats(channels, size=64, batch=2):
    return [torch.randn(batch, c, size // s, size // s) for c, s in zip(channels, (8, 16, 32, 64))]


def test_yolox_topology_shapes_and_stages():
    neck = CSPPAN([32, 64, 128], num_blocks=1).eval()
    outs = neck(_feats([32, 64, 128]))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
    stages = [m for m in neck.modules() if isinstance(m, CSPStage)]
    assert len(stages) == 4
    # YOLOX neck CSP layers: no residual in the bottlenecks, nearest upsampling.
    assert all(not b.use_add for s in stages for b in s.blocks)
    assert neck.upsample.mode == "nearest"


def test_custom_out_channels_depth_depthwise_and_four_levels():
    neck = CSPPAN([48, 96, 192], out_channels=[16, 32, 64], num_blocks=2, depthwise=True)
    outs = neck(_feats([48, 96, 192]))
    assert [o.shape[1] for o in outs] == [16, 32, 64]
    assert all(len(s.blocks) == 2 for s in neck.top_down_stages)
    four = CSPPAN([8, 16, 32, 64])
    outs = four(_feats([8, 16, 32, 64], size=128))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]


def test_gradients_reach_every_input():
    feats = [f.requires_grad_() for f in _feats([16, 32, 64])]
    sum(o.sum() for o in CSPPAN([16, 32, 64])(feats)).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        CSPPAN([16])
    with pytest.raises(ValueError, match="out_channels"):
        CSPPAN([16, 32, 64], out_channels=[16, 32])
    with pytest.raises(ValueError, match="feature maps"):
        CSPPAN([16, 32, 64])(_feats([16, 32]))
