"""A user's own network, through the public API only (no package file touched): a custom block class, a
registered preset, training, saving, loading for inference without the run's config, predicting -- and a model
built with the seed CSPNet API and an unregistered block class, saved and loaded.

Also: version-1 checkpoints (the layout cspdet 0.1 wrote) still load and predict exactly as their v2 form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cspdet import Predictor
from cspdet.config import config_from_dict
from cspdet.runtime.weights import detector_from_checkpoint
from cspdet.runtime.checkpoint import load_checkpoint, new_checkpoint, save_checkpoint
from cspdet.engine.trainer import Trainer
from cspdet.models import (
    BLOCKS,
    DETECTORS,
    ConvBNAct,
    CSPNet,
    Detector,
    DetectorMeta,
    Preset,
    create_detector,
    register_block,
    register_detector,
)


class GhostishBlock(nn.Module):
    """A user's block: cheap 1x1 conv plus a depthwise 3x3 on half the channels, residual (the block contract:
    ``block(c, c, norm=..., act=..., **block_kwargs)``, spatial size kept)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm=nn.BatchNorm2d, act=nn.SiLU, ratio: float = 0.5):
        super().__init__()
        hidden = max(1, int(out_channels * ratio))
        self.primary = ConvBNAct(in_channels, hidden, 1, norm=norm, act=act)
        self.cheap = ConvBNAct(hidden, out_channels - hidden, 3, groups=hidden if (out_channels - hidden) % hidden == 0
                               else 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1) + x


@pytest.fixture(scope="module")
def ghost_preset():
    register_block("test_ghostish", GhostishBlock, overwrite=True)
    rows = [[1, 16, "test_ghostish", True], [1, 32, "test_ghostish", True], [1, 32, "darknet", True],
            [1, 64, "test_ghostish", True]]
    register_detector("test_ghostnet", Preset("custom", dict(stage_defs=rows, stem_channels=8, width=0.5)),
                      overwrite=True)
    yield "test_ghostnet"
    DETECTORS._by_name.pop("test_ghostnet", None)
    BLOCKS._by_name.pop("test_ghostish", None)


def test_registered_custom_preset_trains_saves_loads_and_predicts(ghost_preset, shapes_descriptor, tmp_path):
    raw = {
        "model": {"name": ghost_preset, "num_classes": 3},
        "data": {"dataset": str(shapes_descriptor), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 1,
                  "output_dir": str(tmp_path), "name": "ghost", "log_images": 0, "device": "cpu"},
        "eval": {"img_size": [96, 96], "batch_size": 4},
    }
    summary = Trainer(config_from_dict(raw), progress=False).fit()
    run = Path(summary["run_dir"])
    best = load_checkpoint(run / "best.pt", kind="detector")
    assert [s["block"] for s in best["spec"]["backbone"]["stages"]] == ["test_ghostish"] * 2 + ["darknet",
                                                                                                 "test_ghostish"]
    # inference needs nothing but the checkpoint: the run's config is gone
    (run / "config.yaml").unlink()
    predictor = Predictor.from_checkpoint(run / "best.pt", conf=0.0)
    assert predictor.class_names == ["circle", "square", "triangle"] and predictor.img_size == (96, 96)
    assert isinstance(predictor.model.backbone.stages[0].blocks[0], GhostishBlock)
    image = np.full((50, 70, 3), 200, np.uint8)
    (res,) = predictor(image)
    assert res.boxes.shape[1] == 4 and (res.boxes[:, 2] <= 70).all() and set(res.labels.tolist()) <= {0, 1, 2}


class PlainBlock(nn.Module):
    """An unregistered block class: a spec names it ``"<module>:PlainBlock"``."""

    def __init__(self, in_channels: int, out_channels: int, *, norm=nn.BatchNorm2d, act=nn.ReLU):
        super().__init__()
        self.conv = ConvBNAct(in_channels, out_channels, 3, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_seed_api_model_with_an_unregistered_block_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    net = CSPNet(stem_channels=16, stage_defs=[(1, 32, PlainBlock, True), (1, 64, PlainBlock, True),
                                               (1, 128, PlainBlock, True)], num_classes=5)
    assert net.spec.stages[0].block == f"{PlainBlock.__module__}:PlainBlock"
    torch.save({"spec": net.spec.to_dict(), "model": net.state_dict()}, tmp_path / "net.pt")
    saved = torch.load(tmp_path / "net.pt", weights_only=True)
    from cspdet.models import BackboneSpec

    again = CSPNet.from_spec(BackboneSpec.from_dict(saved["spec"])).eval()
    again.load_state_dict(saved["model"])
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(again(x), net.eval()(x))


def test_version1_checkpoint_loads_like_its_version2_form(tmp_path):
    """A checkpoint in the layout cspdet 0.1 wrote (built here the old way) predicts exactly like v2."""
    from cspdet.config import Config, ModelConfig, config_to_dict

    torch.manual_seed(0)
    model = create_detector("cspdarknet_nano", num_classes=3, width=0.125, prior_prob=0.5).eval()
    cfg = Config(model=ModelConfig(name="cspdarknet_nano", num_classes=3, width=0.125))
    cfg.eval.img_size = [96, 128]
    names = ["circle", "square", "triangle"]
    save_checkpoint({"format": "cspdet", "kind": "detector", "version": 1, "config": config_to_dict(cfg),
                     "class_names": names, "category_ids": [1, 2, 3], "model": model.state_dict(),
                     "epoch": 3, "metrics": {"AP": 0.1}}, tmp_path / "v1.pt")
    meta = DetectorMeta(names, [1, 2, 3], img_size=(96, 128))
    save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict()),
                    tmp_path / "v2.pt")
    v1, _ = detector_from_checkpoint(tmp_path / "v1.pt")
    v2, _ = detector_from_checkpoint(tmp_path / "v2.pt")
    assert v2.spec == model.spec
    # v1 files did not record the init-only prior_prob (the weights are loaded anyway); all else is the same
    assert v1.spec.replace(head=v1.spec.head.replace(prior_prob=0.5)) == model.spec
    assert v1.meta.class_names == names and v1.meta.category_ids == [1, 2, 3] and v1.meta.img_size == (96, 128)
    x = torch.rand(1, 3, 96, 128) * 255
    with torch.no_grad():
        assert torch.equal(v1(x), model(x)) and torch.equal(v2(x), model(x))
    p1 = Predictor.from_checkpoint(tmp_path / "v1.pt", conf=0.0)
    p2 = Predictor.from_checkpoint(tmp_path / "v2.pt", conf=0.0)
    image = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    (r1,), (r2,) = p1(image), p2(image)
    assert np.array_equal(r1.boxes, r2.boxes) and r1.class_names == names and p1.img_size == (96, 128)


def test_detector_knows_what_it_is():
    model = create_detector("cspdarknet_nano", num_classes=2)
    assert isinstance(model, Detector) and model.meta.class_names == ["0", "1"] and model.meta.strides == (8, 16, 32)
    assert model.meta.channel_order == "RGB" and model.meta.pixel_range == (0.0, 255.0)
    with pytest.raises(ValueError, match="3 class names in meta for a head with 2 classes"):
        Detector(model.backbone, model.neck, model.head, DetectorMeta(["a", "b", "c"]))
