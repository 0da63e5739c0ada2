"""cspdet.models: layers, residual blocks, the CSP stage, CSPNet backbones and the detector parts."""

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
from .detector import ACTIVATIONS, BLOCKS, DETECTOR_NAMES, Detector, create_detector
from .head import DecoupledHead, DecoupledHeadLevel, HeadOutputs
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
from .neck import CSPPAN
from .timm_weights import load_timm_weights, timm_to_cspdet_key
from .yolox_weights import YoloxWeightsError, load_yolox_weights, yolox_to_cspdet_state_dict

__all__ = [
    "ConvBNAct", "DWConv", "Focus", "SPPBottleneck", "YoloxBatchNorm2d", "YOLOX_BN_EPS", "YOLOX_BN_MOMENTUM",
    "fuse_conv_bn",
    "ResNetBottleneck", "ResNeXtBottleneck", "DarknetBottleneck",
    "CSPStage", "CSPNet", "ClassifierHead", "StageDef", "DEFAULT_STAGE_DEFS", "CSPDARKNET_SIZES",
    "csp_resnet50", "csp_resnext50_32x4d", "csp_darknet53", "cspdarknet",
    "load_timm_weights", "timm_to_cspdet_key",
    "Detector", "create_detector", "DETECTOR_NAMES", "ACTIVATIONS", "BLOCKS",
    "CSPPAN", "DecoupledHead", "DecoupledHeadLevel", "HeadOutputs",
    "count_parameters", "count_flops", "model_info",
    "load_yolox_weights", "yolox_to_cspdet_state_dict", "YoloxWeightsError",
]
