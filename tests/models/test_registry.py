"""Contract tests over the whole model registry: a preset added to DETECTORS / BACKBONES is covered here.

For every detector preset: it builds, forwards at two input sizes, has the published parameter count where one
exists, its fused copy gives the same outputs, a checkpoint round trip (spec + meta + weights) gives identical
outputs, and the backbone's feature_info (computed from data and from the modules) agrees with its features.
For every backbone preset: the same as a classifier. Plus the registry mechanics themselves.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cspdet.runtime.weights import detector_from_checkpoint
from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
from cspdet.models import (
    ACTIVATIONS,
    BACKBONES,
    BLOCKS,
    DETECTORS,
    BackboneSpec,
    CSPNet,
    DetectorMeta,
    DetectorSpec,
    Preset,
    Registry,
    SpecError,
    count_parameters,
    create_classifier,
    create_detector,
    detector_spec,
    fuse_conv_bn,
)

# Published parameter counts at 80 (detectors, YOLOX) / 1000 (classifiers, timm) classes.
PUBLISHED_DETECTOR_PARAMS = {
    "cspdarknet_nano": 912_159, "cspdarknet_tiny": 5_055_855, "cspdarknet_s": 8_968_255,
    "cspdarknet_m": 25_326_495, "cspdarknet_l": 54_208_895, "cspdarknet_x": 99_071_455,
    "yolov8n_layout": 3_157_200, "yolov8s_layout": 11_166_560, "yolov8m_layout": 25_902_640,  # Ultralytics'
    "yolo11n_layout": 2_624_080, "yolo11s_layout": 9_458_752, "yolo26n_layout": 2_572_280,
    "yolo26s_layout": 10_009_784, "yolov8l_layout": 43_691_520, "yolov8x_layout": 68_229_648,
    "yolo11m_layout": 20_114_688, "yolo11l_layout": 25_372_160, "yolo11x_layout": 56_966_176,
    "yolo26m_layout": 21_896_248, "yolo26l_layout": 26_299_704, "yolo26x_layout": 58_993_368,
}
PUBLISHED_CLASSIFIER_PARAMS = {
    "csp_resnet50": 21_616_168, "cspresnet50": 21_616_168, "csp_resnext50_32x4d": 20_569_896,
    "cspresnext50": 20_569_896, "csp_darknet53": 27_642_184, "cspdarknet53": 27_642_184,
}
# Presets that need arguments to exist at all (their registry entry is a family without a network).
NEEDS_ARGS = {"custom": dict(stage_defs=[[1, 32, "darknet", True], [1, 64, "resnet", True],
                                         [1, 128, "darknet", True], [1, 256, "darknet", True]], stem_channels=16)}
SIZES = [(64, 64), (96, 128)]


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so that fusion is actually exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module", params=DETECTORS.names())
def detector(request):
    name = request.param
    torch.manual_seed(0)
    return name, _randomize_bn(create_detector(name, **NEEDS_ARGS.get(name, {}))).eval()


def test_detector_builds_forwards_and_counts(detector):
    name, model = detector
    assert model.meta.preset == name and model.num_classes == 80
    if name in PUBLISHED_DETECTOR_PARAMS:
        assert count_parameters(model) == PUBLISHED_DETECTOR_PARAMS[name]
    with torch.no_grad():
        for h, w in SIZES:
            out = model(torch.rand(1, 3, h, w) * 255)
            points = sum((h // s) * (w // s) for s in model.strides)
            assert out.shape[:2] == (1, points) and torch.isfinite(out).all()


def test_detector_spec_is_data_that_rebuilds_the_same_network(detector):
    name, model = detector
    spec = model.spec
    assert spec == detector_spec(name, **NEEDS_ARGS.get(name, {}))
    again = DetectorSpec.from_dict(spec.to_dict())
    assert again == spec
    rebuilt = type(model).from_spec(again)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def test_detector_fused_equals_unfused(detector):
    _, model = detector
    x = torch.rand(2, 3, *SIZES[1]) * 255
    fused = fuse_conv_bn(copy.deepcopy(model))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() <= 1e-4


def test_detector_checkpoint_round_trip(detector, tmp_path):
    name, model = detector
    meta = DetectorMeta([f"c{i}" for i in range(80)], list(range(1, 81)), img_size=(96, 128), preset=name)
    save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict()),
                    tmp_path / "m.pt")
    loaded, _ = detector_from_checkpoint(tmp_path / "m.pt")
    assert loaded.meta == meta and loaded.spec == model.spec
    x = torch.rand(1, 3, *SIZES[0]) * 255
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_detector_feature_info_matches_features(detector):
    _, model = detector
    backbone = model.backbone
    data_info = backbone.spec.feature_info()
    assert [(f["num_chs"], f["reduction"]) for f in backbone.feature_info] == data_info
    x = torch.rand(1, 3, *SIZES[1])
    with torch.no_grad():
        feats = backbone(x)
    assert [f.shape[1] for f in feats] == backbone.out_channels == backbone.spec.out_channels
    assert [x.shape[-1] // f.shape[-1] for f in feats] == backbone.out_strides == list(model.strides)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_classifier_presets(name, tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(create_classifier(name, **NEEDS_ARGS.get(name, {}))).eval()
    if name in PUBLISHED_CLASSIFIER_PARAMS:
        assert count_parameters(model) == PUBLISHED_CLASSIFIER_PARAMS[name]
    with torch.no_grad():
        for h, w in SIZES:
            assert model(torch.rand(1, 3, h, w)).shape == (1, 1000)
        x = torch.rand(2, 3, *SIZES[0])
        assert (fuse_conv_bn(copy.deepcopy(model))(x) - model(x)).abs().max().item() <= 1e-4
        spec = BackboneSpec.from_dict(model.spec.to_dict())
        torch.save(model.state_dict(), tmp_path / "w.pt")
        rebuilt = CSPNet.from_spec(spec).eval()
        rebuilt.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
        assert torch.equal(rebuilt(x), model(x))
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == model.spec.feature_info()


# ------------------------------------------------------------------------------------------ mechanics


def test_registry_names_and_errors():
    reg: Registry[type] = Registry("widget")
    reg.register("a", nn.ReLU)
    assert reg.get("a") is nn.ReLU and reg.name_of(nn.ReLU) == "a" and "a" in reg
    with pytest.raises(SpecError, match="already registered"):
        reg.register("a", nn.SiLU)
    with pytest.raises(SpecError, match="unknown widget 'b'"):
        reg.get("b")
    # an unregistered class is named by its import path, and resolves while its module is imported
    assert reg.name_of(nn.GELU) == "torch.nn.modules.activation:GELU"
    assert reg.get("torch.nn.modules.activation:GELU") is nn.GELU
    with pytest.raises(SpecError, match="not imported"):
        reg.get("some_module_never_imported:Block")
    with pytest.raises(SpecError, match="no importable name"):
        reg.name_of(lambda: nn.ReLU())
    # a temporary registration goes away again; an alias keeps naming the object
    reg.register("relu", nn.ReLU)
    assert reg.unregister("a") is nn.ReLU and "a" not in reg and reg.name_of(nn.ReLU) == "relu"
    reg.unregister("relu")
    assert reg.name_of(nn.ReLU) == "torch.nn.modules.activation:ReLU"
    with pytest.raises(SpecError, match="not registered"):
        reg.unregister("relu")


def test_spec_rejects_code_and_unknown_keys():
    spec = detector_spec("cspdarknet_nano", 3)
    data = spec.to_dict()
    data["head"]["bogus"] = 1
    with pytest.raises(SpecError, match=r"spec.head: unknown key\(s\) bogus"):
        DetectorSpec.from_dict(data, "spec")
    with pytest.raises(SpecError, match="not plain data"):
        spec.head.replace(options={"assigner": object()})
    # a CSPNet built with an unnamed activation still works; only describing it fails, with advice
    net = CSPNet(stem_channels=8, stage_defs=[(1, 16, BLOCKS.get("darknet"), True)], num_classes=2,
                 act=lambda: nn.LeakyReLU(0.2))
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(SpecError, match="register"):
        net.spec


def test_overrides_and_presets_are_checked():
    assert detector_spec("cspdarknet_nano", 3, act="relu").head.act == "relu"
    assert detector_spec("cspdarknet_nano", 3, act=nn.ReLU).head.act == "relu"  # classes are named
    with pytest.raises(SpecError, match="unknown option.*custom"):
        detector_spec("cspdarknet_s", stage_defs=[[1, 32, "darknet", True]])
    with pytest.raises(SpecError, match="unknown detector 'nope'"):
        detector_spec("nope")
    with pytest.raises(SpecError, match="stage_defs"):
        detector_spec("custom")
    # a new preset is one registry entry: a family plus numbers, or a whole spec
    name = "test_registry_yolox_relu"
    DETECTORS.register(name, Preset("yolox", dict(depth=0.33, width=0.125, act="relu")), overwrite=True)
    fixed = "test_registry_fixed"
    DETECTORS.register(fixed, detector_spec("cspdarknet_nano", 80), overwrite=True)
    try:
        assert create_detector(name, num_classes=2).spec.neck.act == "relu"
        assert create_detector(fixed, num_classes=4).num_classes == 4
        with pytest.raises(SpecError, match="fixed spec"):
            detector_spec(fixed, width=2.0)
    finally:
        for n in (name, fixed):
            DETECTORS._by_name.pop(n)
    assert ACTIVATIONS.name_of(nn.LeakyReLU) == "leaky_relu_0.01"  # timm's slope, not YOLOX's
