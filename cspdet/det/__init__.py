"""Detection utilities of both head families (torch + torchvision.ops only).

* shared: box geometry and grids (``boxes``), class-aware NMS post-processing (``postprocess``);
* YOLOX's decoupled head: SimOTA assignment (``assigner``) and its IoU / objectness / class / L1 losses
  (``losses``);
* the task-aligned head: task-aligned assignment (``tal``, TOOD), its loss with the one-to-one branch's weight
  schedule (``tal_loss``), distance encoding, distribution focal loss and CIoU (``dfl``), and the NMS-free top-k
  post-processing of a one-to-one branch (``nms_free``).
"""

from .assigner import Assignment, SimOTAAssigner
from .boxes import batched_box_iou, decode_boxes, elementwise_box_iou, grid_points
from .dfl import batched_box_ciou, bbox2dist, ciou_loss, dfl_expectation, dist2bbox, distribution_focal_loss
from .losses import SimOTALoss, box_iou_loss, encode_l1_targets
from .nms_free import topk_postprocess
from .postprocess import postprocess
from .tal import TALAssignment, TaskAlignedAssigner
from .tal_loss import TaskAlignedLoss, o2m_weight_schedule

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
    # task-aligned head
    "TALAssignment",
    "TaskAlignedAssigner",
    "TaskAlignedLoss",
    "o2m_weight_schedule",
    "batched_box_ciou",
    "bbox2dist",
    "ciou_loss",
    "dfl_expectation",
    "dist2bbox",
    "distribution_focal_loss",
    "topk_postprocess",
]
