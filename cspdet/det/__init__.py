"""Detection utilities: boxes, SimOTA assignment, losses, decoding and NMS (torch + torchvision.ops only)."""

from .assigner import Assignment, SimOTAAssigner
from .boxes import batched_box_iou, decode_boxes, elementwise_box_iou, grid_points
from .losses import SimOTALoss, box_iou_loss, encode_l1_targets
from .postprocess import postprocess

__all__ = [
    "Assignment",
    "SimOTAAssigner",
    "SimOTALoss",
    "batched_box_iou",
    "box_iou_loss",
    "decode_boxes",
    "elementwise_box_iou",
    "encode_l1_targets",
    "grid_points",
    "postprocess",
]
