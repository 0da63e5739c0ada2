"""The 80 COCO classes and their category ids: defined in :mod:`cspdet.coco_classes` (a leaf module, so that the
model converters can use it as well as the datasets); re-exported here for the data code's imports."""

from ..coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASSES"]
