"""cspdet.models: layers, residual blocks, the CSP stage, CSPNet backbones and (below) the detector parts."""

from .blocks import DarknetBottleneck, ResNetBottleneck, ResNeXtBottleneck
from .cspnet import (
    CSPDARKNET_SIZES,
    DEFAULT_STAGE_DEFS,
    ClassifierHead,
    CSPNet,
    CSPStage,
    StageDef,
    csp_darknet53,
    csp_resnet50,
    csp_resnext50_32x4d,
    cspdarknet,
)
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
from .timm_weights import load_timm_weights, timm_to_cspdet_key

__all__ = [
    "ConvBNAct", "DWConv", "Focus", "SPPBottleneck", "YoloxBatchNorm2d", "YOLOX_BN_EPS", "YOLOX_BN_MOMENTUM",
    "fuse_conv_bn",
    "ResNetBottleneck", "ResNeXtBottleneck", "DarknetBottleneck",
    "CSPStage", "CSPNet", "ClassifierHead", "StageDef", "DEFAULT_STAGE_DEFS", "CSPDARKNET_SIZES",
    "csp_resnet50", "csp_resnext50_32x4d", "csp_darknet53", "cspdarknet",
    "load_timm_weights", "timm_to_cspdet_key",
]

# ---- detector (owned by the detector engineer: neck.py, head.py, detector.py, yolox_weights.py, info.py) ----
# Add `from .detector import ...` etc. here and extend __all__ with `__all__ += [...]`.
from .detector import ACTIVATIONS, BLOCKS, DETECTOR_NAMES, Detector, create_detector
from .head import DecoupledHead, DecoupledHeadLevel, HeadOutputs
from .info import count_flops, count_parameters, model_info
from .neck import CSPPAN
from .yolox_weights import YoloxWeightsError, load_yolox_weights, yolox_to_cspdet_state_dict

__all__ += [
    "Detector", "create_detector", "DETECTOR_NAMES", "ACTIVATIONS", "BLOCKS",
    "CSPPAN", "DecoupledHead", "DecoupledHeadLevel", "HeadOutputs",
    "count_parameters", "count_flops", "model_info",
    "load_yolox_weights", "yolox_to_cspdet_state_dict", "YoloxWeightsError",
]

# ---- task-aligned / ELAN family (issue 11): elan.py, elan_neck.py, tal_head.py, yolov8_layout.py ----
from .elan import C2fNet, C2fStage, C3k, C3k2Stage, ConvBottleneck, SPPF
from .elan_neck import C2fPAN
from .tal_head import TALHeadLevel, TALHeadOutputs, TaskAlignedHead
from .yolov8_layout import YOLOV8_SIZES, yolov8_channels, yolov8_layout

__all__ += [
    "ConvBottleneck", "C3k", "C2fStage", "C3k2Stage", "SPPF", "C2fNet", "C2fPAN",
    "TaskAlignedHead", "TALHeadLevel", "TALHeadOutputs",
    "yolov8_layout", "yolov8_channels", "YOLOV8_SIZES",
]
