"""Detection utilities of the built-in head families (torch + torchvision.ops only); a head registered in
:data:`cspdet.models.HEADS` may use any of them.

* shared: box geometry and grids (``boxes``); the typed :class:`Predictions` record every head decodes to and the
  deploy layout exported files keep (``predictions``); the one post-processing that the detector, the runtime's
  backends, the evaluator, the predictor and the export graphs all call -- score filter + class-aware NMS
  (``postprocess``) or the NMS-free top-k of a one-to-one head (``nms_free``);
* the typed :class:`Targets` record (boxes, labels, mask, per-box extras) that the collate builds and every loss
  reads, and one image's :class:`ImageTargets` (``targets``);
* YOLOX's decoupled head: SimOTA assignment (``simota``) and its IoU / objectness / class / L1 losses
  (``yolox_loss``);
* the task-aligned head: task-aligned assignment (``tal``, TOOD), its loss with the one-to-one branch's weight
  schedule (``tal_loss``), distance encoding and distribution focal loss (``dfl``), CIoU (``iou_loss``).

The old module names ``assigner`` and ``losses`` still import for one release, with a ``DeprecationWarning``.
"""

from .._deprecated import moved_modules
from .boxes import batched_box_iou, cxcywh_to_xyxy, decode_boxes, elementwise_box_iou, grid_points, xyxy_to_cxcywh
from .dfl import bbox2dist, dfl_expectation, dist2bbox, distribution_focal_loss
from .iou_loss import batched_box_ciou, ciou_loss
from .nms_free import topk_dets, topk_postprocess
from .postprocess import as_predictions, filter_dets, nms_dets, postprocess
from .predictions import Predictions, from_deploy_layout, to_deploy_layout
from .simota import Assignment, SimOTAAssigner
from .tal import TALAssignment, TaskAlignedAssigner
from .tal_loss import TaskAlignedLoss, o2m_weight_schedule
from .yolox_loss import SimOTALoss, box_iou_loss, encode_l1_targets
from .targets import ImageTargets, Targets

__all__ = [
    "Assignment",
    "SimOTAAssigner",
    "SimOTALoss",
    "batched_box_iou",
    "box_iou_loss",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "decode_boxes",
    "elementwise_box_iou",
    "encode_l1_targets",
    "grid_points",
    # targets
    "ImageTargets",
    "Targets",
    # predictions and post-processing
    "Predictions",
    "as_predictions",
    "filter_dets",
    "from_deploy_layout",
    "nms_dets",
    "postprocess",
    "to_deploy_layout",
    "topk_dets",
    "topk_postprocess",
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
]

# renamed modules (files named after their concept); the old paths go in the next release
moved_modules(__name__, {
    "assigner": dict.fromkeys(("Assignment", "SimOTAAssigner"), "cspdet.det.simota"),
    "losses": dict.fromkeys(("SimOTALoss", "box_iou_loss", "encode_l1_targets"), "cspdet.det.yolox_loss"),
})
