"""The predictor, the evaluator and the trainer's logged images letterbox with cspdet.data.Letterbox and give
exactly the numbers of the hand-written pipelines they replaced; the logged images use the one drawer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from cspdet.config import config_from_dict
from cspdet.data import build_dataset, build_val_loader
from cspdet.data.synthetic import make_shapes_dataset
from cspdet.data.visualize import class_color, draw_boxes
from cspdet.engine.evaluator import COCOEvaluator
from cspdet.engine.plots import ValImagesLogger
from cspdet.runtime.predictor import Predictor
from letterbox_reference import old_letterbox  # tests/letterbox_reference.py


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    cv2.rectangle(image, (w // 4, h // 4), (w // 2, h // 2), (250, 30, 30), -1)
    return image


def test_predictor_boxes_equal_the_old_pipeline_bit_for_bit(tiny):
    model = tiny.detector(tiny.config())
    # rect=False: the old pipeline letterboxed every image to the full size
    predictor = Predictor(model, tiny.names, img_size=(96, 128), conf=0.2, iou=0.5, max_det=50, rect=False)
    for h, w, seed in [(90, 200, 0), (200, 90, 1), (333, 517, 2)]:
        image = _photo(h, w, seed)
        (res,) = predictor.predict_images([image])
        assert len(res) > 0
        # before: letterbox -> predict -> float32 boxes / r, clipped to the image
        boxed, r = old_letterbox(image, (96, 128))
        (ref,) = model.predict(torch.from_numpy(boxed).permute(2, 0, 1)[None].float(), conf=0.2, iou=0.5, max_det=50)
        boxes = ref["boxes"].float().numpy() / r
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        np.testing.assert_array_equal(res.boxes.view(np.uint32), boxes.astype(np.float32).view(np.uint32))


def test_evaluator_results_equal_the_old_pipeline(coco128_subset, tiny):
    model = tiny.detector(tiny.config(num_classes=80))
    dataset = build_dataset(coco128_subset, "val")
    evaluator = COCOEvaluator(build_val_loader(dataset, (160, 128), 5, workers=0), max_det=20)
    got = evaluator.predict(model)
    # before: the val dataset letterboxed with transforms.letterbox, the collate function stored the ratio
    # as float32, and detections_to_coco divided float64 boxes by it and clipped them to the image
    cats = np.asarray(dataset.category_ids)
    want: dict[int, list[dict]] = {}
    for start in range(0, len(dataset), 5):
        samples = [dataset.load_sample(i) for i in range(start, min(start + 5, len(dataset)))]
        boxed = [old_letterbox(s.image, (160, 128)) for s in samples]
        images = torch.stack([torch.from_numpy(b) for b, _ in boxed]).permute(0, 3, 1, 2).float()
        for k, det in enumerate(model.predict(images, conf=0.001, iou=0.65, max_det=20)):
            (h, w), ratio = samples[k].image.shape[:2], float(np.float32(boxed[k][1]))
            b = det["boxes"].numpy().astype(np.float64) / ratio
            b[:, 0::2] = b[:, 0::2].clip(0, w)
            b[:, 1::2] = b[:, 1::2].clip(0, h)
            b[:, 2:] -= b[:, :2]
            image_id = dataset.image_ids[start + k]
            want[image_id] = [
                {"image_id": image_id, "category_id": int(cats[c]), "bbox": [round(float(v), 3) for v in box],
                 "score": round(float(s), 5)}
                for box, s, c in zip(b, det["scores"].numpy().astype(np.float64), det["labels"].numpy())
            ]
    assert got == want and sum(map(len, got.values())) > 0


class _FixedDetections(torch.nn.Module):
    """Test double for the EMA model: one box of class 1 per image; records the inputs it was given."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def predict(self, images, conf=0.25):
        self.inputs.append(images)
        return [{"boxes": torch.tensor([[4.0, 20.0, 40.0, 44.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


def test_trainer_logs_letterboxed_images_drawn_in_the_class_colour(tmp_path: Path):
    from cspdet.engine.trainer import Trainer

    make_shapes_dataset(tmp_path / "shapes", num_train=4, num_val=2, size=80, seed=0)
    desc = tmp_path / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {tmp_path / 'shapes'}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    cfg = config_from_dict({
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(desc), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 1, "batch_size": 2, "output_dir": str(tmp_path / "runs"), "name": "run",
                  "log_images": 2, "device": "cpu"},
        "eval": {"img_size": [64, 96], "batch_size": 2},
    })
    trainer = Trainer(cfg, run_dir=tmp_path / "runs" / "run", progress=False)
    logged = []
    trainer.writer.close()
    trainer.writer = type("Recorder", (), {"add_image": lambda self, *a, **kw: logged.append((a, kw))})()
    stub = _FixedDetections()
    trainer.eval_model = lambda: stub
    ValImagesLogger.log(trainer)
    assert len(logged) == 2
    for k, ((tag, image, _), kw) in enumerate(logged):
        padded, _ = old_letterbox(trainer.val_set.load_sample(k).image, (64, 96))
        assert tag == f"val_images/{k}" and kw == {"dataformats": "HWC"}
        np.testing.assert_array_equal(stub.inputs[k][0].permute(1, 2, 0).numpy(), padded.astype(np.float32))
        box = np.array([[4.0, 20.0, 40.0, 44.0]], np.float32)
        want = draw_boxes(padded, box, np.array([1]), trainer.val_set.class_names, scores=np.array([0.9]))
        np.testing.assert_array_equal(image, want)
        assert int((image == np.array(class_color(1), np.uint8)).all(axis=2).sum()) > 20

