"""cspdet.data: datasets (COCO json, YOLO txt, VOC xml), augmentation, loaders and dataset checks.

Public API:
    build_dataset(descriptor, split, strict=False, cache=False) -> DetectionDataset
    DetectionDataset: class_names, category_ids, image_ids, records (RecordTable), load_sample(i) -> Sample,
        coco_gt(), skipped
    Letterbox(size, pad_value=114): apply(image) -> (image, ratio); invert(boxes, ratio, orig_size) -> boxes
    build_train_loader(dataset, cfg, batch_size, seed, rank=0, world_size=1) -> DataLoader
    build_val_loader(dataset, img_size, batch_size, workers, rank=0, world_size=1) -> DataLoader
"""

from .cache import ImageCache
from .datasets import DetectionDataset, build_dataset, load_descriptor
from .image_io import ImageReadError, read_image
from .letterbox import Letterbox
from .loader import DetectionLoader, build_train_loader, build_val_loader, collate_detection
from .problems import DatasetError, DatasetProblem, DatasetWarning, ProblemReport
from .record_table import RecordTable
from .records import ImageRecord, Sample
from .sampler import EpochSampler
from .transforms import AugmentConfig
from .views import DetectionItem, TrainDataset, ValDataset
from .voc_format import VOC_CLASSES
from .yolo_format import yolo_label_path

__all__ = [
    "AugmentConfig",
    "DatasetError",
    "DatasetProblem",
    "DatasetWarning",
    "DetectionDataset",
    "DetectionLoader",
    "EpochSampler",
    "ImageCache",
    "ImageReadError",
    "ImageRecord",
    "Letterbox",
    "ProblemReport",
    "RecordTable",
    "Sample",
    "TrainDataset",
    "DetectionItem",
    "VOC_CLASSES",
    "ValDataset",
    "build_dataset",
    "build_train_loader",
    "build_val_loader",
    "collate_detection",
    "load_descriptor",
    "read_image",
    "yolo_label_path",
]
