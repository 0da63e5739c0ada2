"""Tests for cspdet/models/timm_weights.py: strict timm weight import and logit parity."""

from __future__ import annotations

import pytest
import torch

from weights_helpers import randomize_bn  # tests/weights_helpers.py
from cspdet.models import csp_darknet53, csp_resnet50, csp_resnext50_32x4d, load_timm_weights, timm_to_cspdet_key


timm = pytest.importorskip("timm")

PAIRS = {"cspresnet50": csp_resnet50, "cspresnext50": csp_resnext50_32x4d, "cspdarknet53": csp_darknet53}


@pytest.fixture(scope="module")
def timm_models():
    """Random-init timm models (no download) with non-trivial BN statistics; built once per module."""
    models = {}
    for i, name in enumerate(PAIRS):
        torch.manual_seed(i)
        # timm zero-inits the last BN of each bottleneck; randomising BN makes every block contribute.
        models[name] = randomize_bn(timm.create_model(name, pretrained=False), seed=i).eval()
    return models


@pytest.mark.parametrize("name", list(PAIRS))
def test_logits_match_timm(name, timm_models):
    ref = timm_models[name]
    ours = load_timm_weights(PAIRS[name](), ref.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == expected.shape == (2, 1000)
    assert (got - expected).abs().max().item() <= 1e-4
    # pooled features (pre-logits) agree too
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_features_only_model_takes_backbone_weights(timm_models):
    ref = timm_models["cspdarknet53"]
    ours = load_timm_weights(csp_darknet53(features_only=True), ref.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[-1], ref.forward_features(x))


def test_missing_and_unexpected_keys_are_listed(timm_models):
    sd = dict(timm_models["cspresnet50"].state_dict())
    del sd["stages.2.conv_exp.conv.weight"]
    sd["stages.0.attn.fc.weight"] = torch.zeros(1)
    model = csp_resnet50()
    before = model.stem.conv.conv.weight.clone()
    with pytest.raises(ValueError) as err:
        load_timm_weights(model, sd)
    message = str(err.value)
    assert "1 missing key(s): stages.2.expand.conv.weight" in message
    assert "1 unexpected timm key(s): stages.0.attn.fc.weight" in message
    torch.testing.assert_close(model.stem.conv.conv.weight, before)  # nothing copied on failure


def test_wrong_architecture_or_classes_is_rejected(timm_models):
    with pytest.raises(ValueError, match="shape mismatch"):
        load_timm_weights(csp_resnet50(num_classes=10), timm_models["cspresnet50"].state_dict())
    with pytest.raises(ValueError, match="does not match this model"):
        load_timm_weights(csp_resnext50_32x4d(), timm_models["cspresnet50"].state_dict())
    with pytest.raises(ValueError, match="must be a mapping"):
        load_timm_weights(csp_resnet50(), [1, 2])


def test_key_renames():
    assert timm_to_cspdet_key("stem.conv1.bn.running_var") == "stem.conv.bn.running_var"
    assert timm_to_cspdet_key("stages.3.conv_transition_b.conv.weight") == "stages.3.transition_b.conv.weight"
    assert timm_to_cspdet_key("stages.3.conv_transition.bn.bias") == "stages.3.fuse.bn.bias"
    assert timm_to_cspdet_key("stages.1.conv_down.conv.weight") == "stages.1.down.conv.weight"
    assert timm_to_cspdet_key("stages.0.conv_exp.bn.weight") == "stages.0.expand.bn.weight"
    assert timm_to_cspdet_key("stages.0.blocks.2.conv3.conv.weight") == "stages.0.blocks.2.conv3.conv.weight"
    assert timm_to_cspdet_key("head.fc.weight") == "head.fc.weight"
