"""A small synthetic detection dataset that cspdet generates itself (for ``make demo`` and tests).

Images show filled circles, squares and triangles of random size, colour and position on a noisy,
gradient background; the boxes are exact because we draw the shapes. It is written in COCO layout::

    root/images/{train,val}/000001.jpg
    root/annotations/instances_{train,val}.json   (category ids 1..3, xywh boxes)

The data are synthetic: they show that the whole pipeline learns, not how a model does on real photos.
Generation is deterministic for a given seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

__all__ = ["SHAPE_NAMES", "draw_shapes_image", "make_shapes_dataset"]

SHAPE_NAMES = ("circle", "square", "triangle")


def draw_shapes_image(
    rng: np.random.Generator, size: int = 192, max_objects: int = 4, min_side: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Returns:
        image (size, size, 3) uint8 RGB, boxes (N, 4) float32 xyxy px, labels (N,) int64 in 0..2.
    """
    # Background: a colour gradient plus noise, so the model cannot rely on a flat colour.
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    image = (c0 * (1 - t) + c1 * t).repeat(size, axis=1)
    image = np.clip(image + rng.normal(0, 12, size=image.shape), 0, 255).astype(np.uint8)

    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        side = int(rng.integers(min_side, size // 2))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, size=2))
        box = np.array([x1, y1, x1 + side, y1 + side], dtype=np.float32)
        # Keep objects apart: a shape painted over another would make the earlier box a lie.
        if boxes and _overlaps(box, np.stack(boxes)):
            continue
        label = int(rng.integers(0, len(SHAPE_NAMES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if np.abs(np.array(colour) - image[y1:y1 + side, x1:x1 + side].mean((0, 1))).sum() < 120:
            colour = tuple(255 - c for c in colour)  # make sure the shape stands out from its background
        if label == 0:
            cv2.circle(image, (x1 + side // 2, y1 + side // 2), side // 2, colour, thickness=-1)
            r = side // 2
            box = np.array([x1 + side // 2 - r, y1 + side // 2 - r, x1 + side // 2 + r + 1, y1 + side // 2 + r + 1],
                           dtype=np.float32)
        elif label == 1:
            cv2.rectangle(image, (x1, y1), (x1 + side - 1, y1 + side - 1), colour, thickness=-1)
        else:
            pts = np.array([[x1 + side // 2, y1], [x1, y1 + side - 1], [x1 + side - 1, y1 + side - 1]], np.int32)
            cv2.fillPoly(image, [pts], colour)
        boxes.append(np.clip(box, 0, size))
        labels.append(label)
    return image, np.stack(boxes).astype(np.float32), np.array(labels, dtype=np.int64)


def _overlaps(box: np.ndarray, others: np.ndarray) -> bool:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    return bool((rb > lt).all(axis=1).any())


def make_shapes_dataset(
    root: str | Path, num_train: int = 256, num_val: int = 64, size: int = 192, seed: int = 0
) -> Path:
    """Write the dataset under ``root`` (skipped when it already exists with the same parameters).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    stamp = root / "synthetic.json"
    params = {"num_train": num_train, "num_val": num_val, "size": size, "seed": seed, "version": 2}
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return root
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_NAMES)]
    for split, count in (("train", num_train), ("val", num_val)):
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            image, boxes, labels = draw_shapes_image(rng, size=size)
            name = f"{image_id:06d}.jpg"
            cv2.imwrite(str(image_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for box, label in zip(boxes.tolist(), labels.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
                })
        ann_dir = root / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        gt = {"info": {"description": "cspdet synthetic shapes (generated)"}, "images": images,
              "annotations": annotations, "categories": categories}
        (ann_dir / f"instances_{split}.json").write_text(json.dumps(gt))
    stamp.write_text(json.dumps(params))
    return root
