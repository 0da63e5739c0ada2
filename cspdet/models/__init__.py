"""cspdet.models: layers, blocks, the CSP stage, CSPNet, necks, heads (each implementing the head contract of
:mod:`cspdet.models.contracts`), the detector, and the model zoo as data.

A network is a spec (:mod:`cspdet.models.spec`): a preset name in :data:`DETECTORS` / :data:`BACKBONES` resolves
to one, ``create_detector`` / ``create_classifier`` build from it, and a built model describes itself again
(``model.spec``, ``model.meta``).
"""

from .._deprecated import moved_modules
from .attention import C2PSA, Attention, PSABlock
from .backbones import (
    CSPDARKNET_SIZES,
    csp_darknet53,
    csp_darknet53_spec,
    csp_resnet50,
    csp_resnet50_spec,
    csp_resnext50_32x4d,
    csp_resnext50_32x4d_spec,
    cspdarknet,
    cspdarknet_spec,
)
from .blocks import DarknetBottleneck, ResNetBottleneck, ResNeXtBottleneck
from .contracts import PHASES, DetectionHead, HeadBase, HeadEvalDefaults
from .csp_pan import CSPPAN
from .csp_stage import CSPStage
from .cspnet import DEFAULT_STAGE_DEFS, ClassifierHead, CSPNet, StageDef
from .detector import Detector
from .elan_backbone import C2fNet
from .elan_blocks import SPPF, BottleneckPSA, C2fStage, C3k, C3k2Stage, ConvBottleneck
from .elan_pan import C2fPAN
from .info import count_flops, count_parameters, model_info
from .layers import (
    YOLOX_BN_EPS,
    YOLOX_BN_MOMENTUM,
    ConvBNAct,
    DWConv,
    Focus,
    SPPBottleneck,
    YoloxBatchNorm2d,
    fuse_conv_bn,
)
from .presets import (
    BACKBONES,
    DETECTORS,
    FAMILIES,
    Preset,
    classifier_spec,
    create_classifier,
    create_detector,
    detector_spec,
    register_activation,
    register_backbone,
    register_block,
    register_detector,
    register_family,
    register_norm,
)
from .registry import ACTIVATIONS, BACKBONE_KINDS, BLOCKS, HEADS, NECKS, NORMS, STAGES, Registry, SpecError
from .spec import BackboneSpec, DetectorMeta, DetectorSpec, HeadSpec, NeckSpec, StageSpec
from .tal_head import TALHeadLevel, TALHeadOutputs, TaskAlignedHead
from .timm_weights import load_timm_weights, timm_to_cspdet_key
from .yolo11_layout import YOLO11_SIZES, yolo11_spec, yolo26_layout, yolo26_spec
from .yolov8_layout import YOLOV8_SIZES, yolov8_channels, yolov8_layout, yolov8_spec
from .ultralytics_weights import UltralyticsWeightsError, convert_ultralytics, read_ultralytics_checkpoint
from .yolox_head import DecoupledHead, DecoupledHeadLevel, HeadOutputs
from .yolox_weights import YoloxWeightsError, infer_yolox_preset, load_yolox_weights, yolox_to_cspdet_state_dict

__all__ = [
    # layers and blocks
    "ConvBNAct", "DWConv", "Focus", "SPPBottleneck", "YoloxBatchNorm2d", "YOLOX_BN_EPS", "YOLOX_BN_MOMENTUM",
    "fuse_conv_bn", "ResNetBottleneck", "ResNeXtBottleneck", "DarknetBottleneck",
    # networks
    "CSPStage", "CSPNet", "ClassifierHead", "StageDef", "DEFAULT_STAGE_DEFS", "CSPPAN", "DecoupledHead",
    "DecoupledHeadLevel", "HeadOutputs", "Detector", "ConvBottleneck", "C3k", "C2fStage", "C3k2Stage", "SPPF",
    "C2fNet", "C2fPAN", "TaskAlignedHead", "TALHeadLevel", "TALHeadOutputs", "Attention", "PSABlock", "C2PSA",
    "BottleneckPSA",
    # published backbones
    "CSPDARKNET_SIZES", "csp_resnet50", "csp_resnext50_32x4d", "csp_darknet53", "cspdarknet", "csp_resnet50_spec",
    "csp_resnext50_32x4d_spec", "csp_darknet53_spec", "cspdarknet_spec", "YOLOV8_SIZES", "yolov8_channels",
    "yolov8_layout", "yolov8_spec", "YOLO11_SIZES", "yolo11_spec", "yolo26_spec", "yolo26_layout",
    # contracts
    "DetectionHead", "HeadBase", "HeadEvalDefaults", "PHASES",
    # models as data
    "BackboneSpec", "DetectorMeta", "DetectorSpec", "HeadSpec", "NeckSpec", "StageSpec", "SpecError", "Registry",
    "ACTIVATIONS", "BACKBONE_KINDS", "BLOCKS", "HEADS", "NECKS", "NORMS", "STAGES", "BACKBONES", "DETECTORS", "FAMILIES", "Preset",
    "classifier_spec", "create_classifier", "create_detector", "detector_spec", "register_activation",
    "register_backbone", "register_block", "register_detector", "register_family", "register_norm",
    # size, weights
    "count_parameters", "count_flops", "model_info", "load_timm_weights", "timm_to_cspdet_key",
    "infer_yolox_preset", "load_yolox_weights", "yolox_to_cspdet_state_dict", "YoloxWeightsError",
    "convert_ultralytics", "read_ultralytics_checkpoint", "UltralyticsWeightsError",
]

# renamed modules (files named after their concept); the old paths go in the next release
_ELAN_BLOCKS = ("BottleneckPSA", "ConvBottleneck", "C3k", "C2fStage", "C3k2Stage", "SPPF")
moved_modules(__name__, {
    "head": dict.fromkeys(("HeadOutputs", "DecoupledHeadLevel", "DecoupledHead"), "cspdet.models.yolox_head"),
    "neck": {"CSPPAN": "cspdet.models.csp_pan"},
    "elan": {**dict.fromkeys(_ELAN_BLOCKS, "cspdet.models.elan_blocks"), "C2fNet": "cspdet.models.elan_backbone"},
    "elan_neck": {"C2fPAN": "cspdet.models.elan_pan"},
})
