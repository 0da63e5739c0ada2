"""cspdet.engine.coco_metrics / evaluator: numbers equal a direct pycocotools COCOeval run; clear errors for bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cspdet.engine.coco_metrics import (
    STAT_KEYS,
    EvaluationError,
    coco_evaluate,
    faster_coco_eval_available,
    load_coco_gt,
    load_detections,
)
from cspdet.engine.evaluator import detections_to_coco

CATS = [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"}]  # gaps, like COCO


def _gt(images, anns) -> dict:
    for i, a in enumerate(anns, 1):
        a.setdefault("id", i)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return {"images": images, "annotations": anns, "categories": copy.deepcopy(CATS)}


def _coco(data: dict) -> COCO:
    gt = COCO()
    gt.dataset = copy.deepcopy(data)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _reference(data: dict, dets: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    """The 12 stats exactly as pycocotools computes them, on private copies of the inputs."""
    gt = _coco(data)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(gt, dt, iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _crafted() -> tuple[dict, list[dict]]:
    """4 images: crowd region, an image with GT and no detections, a background image with a false
    positive, a category (bird, id 9) with detections but no GT, boxes of all three COCO area ranges."""
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (10, 11, 12, 13)]
    anns = [
        {"image_id": 10, "category_id": 1, "bbox": [10, 10, 200, 150]},     # large
        {"image_id": 10, "category_id": 5, "bbox": [300, 200, 50, 40]},     # medium
        {"image_id": 10, "category_id": 5, "bbox": [400, 50, 20, 15]},      # small
        {"image_id": 11, "category_id": 1, "bbox": [50, 50, 300, 300], "iscrowd": 1},  # crowd region
        {"image_id": 11, "category_id": 1, "bbox": [400, 100, 100, 120]},
        {"image_id": 12, "category_id": 5, "bbox": [100, 100, 60, 60]},     # never detected
    ]
    dets = [
        {"image_id": 10, "category_id": 1, "bbox": [12, 8, 198, 155], "score": 0.9},
        {"image_id": 10, "category_id": 1, "bbox": [100, 100, 50, 50], "score": 0.3},   # false positive
        {"image_id": 10, "category_id": 5, "bbox": [302, 203, 48, 38], "score": 0.8},
        {"image_id": 10, "category_id": 5, "bbox": [398, 52, 24, 14], "score": 0.4},
        {"image_id": 11, "category_id": 1, "bbox": [60, 60, 80, 80], "score": 0.95},    # inside the crowd: ignored
        {"image_id": 11, "category_id": 1, "bbox": [405, 98, 95, 125], "score": 0.7},
        {"image_id": 11, "category_id": 9, "bbox": [10, 10, 30, 30], "score": 0.6},     # class without GT
        {"image_id": 13, "category_id": 5, "bbox": [0, 0, 40, 40], "score": 0.5},       # background image
    ]
    return _gt(images, anns), dets


def _random_case(seed: int, n_images: int = 12) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": 100 + i, "width": 320, "height": 240, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(4, 150, size=2)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            cat = int(rng.choice([1, 5]))
            anns.append({"image_id": 100 + i, "category_id": cat, "bbox": [x, y, w, h],
                         "iscrowd": int(rng.random() < 0.05)})
            if rng.random() < 0.8:  # a jittered true positive
                jit = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                dets.append({"image_id": 100 + i, "category_id": cat if rng.random() < 0.9 else 9,
                             "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1), max(h + jit[3], 1)],
                             "score": float(rng.uniform(0.05, 1))})
        for _ in range(int(rng.integers(0, 4))):  # false positives
            w, h = rng.uniform(4, 100, size=2)
            dets.append({"image_id": 100 + i, "category_id": int(rng.choice([1, 5, 9])),
                         "bbox": [float(rng.uniform(0, 200)), float(rng.uniform(0, 150)), w, h],
                         "score": float(rng.uniform(0, 1))})
    return _gt(images, anns), dets


@pytest.mark.parametrize("case", ["crafted", "random0", "random1"])
def test_stats_equal_pycocotools(case):
    data, dets = _crafted() if case == "crafted" else _random_case(int(case[-1]))
    before = copy.deepcopy(dets)
    metrics = coco_evaluate(_coco(data), dets)
    assert dets == before, "the caller's detections must not be modified"
    expected = _reference(data, dets)
    assert list(metrics.stats) == list(STAT_KEYS)
    np.testing.assert_array_equal(np.array([metrics.stats[k] for k in STAT_KEYS]), expected)
    assert metrics.num_detections == len(dets) and metrics.num_images == len(data["images"])
    assert "Average Precision" in metrics.summary and len(metrics.summary.splitlines()) == 12


def test_per_class_ap_equals_single_category_cocoeval():
    data, dets = _random_case(3, n_images=16)
    metrics = coco_evaluate(_coco(data), dets)
    by_id = {c.category_id: c for c in metrics.per_class}
    assert [c.category_id for c in metrics.per_class] == [1, 5, 9]
    for cat in (1, 5):
        ref = _reference(data, dets, cat_ids=[cat])
        assert by_id[cat].ap == pytest.approx(ref[0], abs=1e-12)
        assert by_id[cat].ap50 == pytest.approx(ref[1], abs=1e-12)
        assert by_id[cat].num_gt == sum(a["category_id"] == cat and not a["iscrowd"] for a in data["annotations"])
        assert by_id[cat].num_det == sum(d["category_id"] == cat for d in dets)
    # bird (9) has detections but no ground truth: AP is undefined, reported as NaN / null, and left out of mAP
    assert math.isnan(by_id[9].ap) and by_id[9].num_gt == 0 and by_id[9].num_det > 0
    table = metrics.format_table()
    assert "cat" in table and "dog" in table and "bird" not in table and "without ground truth" in table
    d = metrics.to_dict()
    assert [c["AP"] for c in d["per_class"] if c["name"] == "bird"] == [None]
    json.dumps(d)  # JSON-serialisable (no NaN)


def test_crowd_only_detection_is_ignored_not_a_false_positive():
    data, dets = _crafted()
    inside_crowd = [d for d in dets if d["image_id"] == 11 and d["score"] == 0.95]
    without = [d for d in dets if d not in inside_crowd]
    a = coco_evaluate(_coco(data), dets).stats
    b = coco_evaluate(_coco(data), without).stats
    assert a["AP"] == b["AP"] and a["AP50"] == b["AP50"]  # matched to a crowd region -> ignored


def test_no_detections_gives_zero_ap_for_classes_with_gt():
    data, _ = _crafted()
    metrics = coco_evaluate(_coco(data), [])
    assert metrics.stats["AP"] == 0.0 and metrics.stats["AR100"] == 0.0
    assert all(c.ap == 0.0 for c in metrics.per_class if c.num_gt > 0)


def test_mismatched_image_ids_are_named():
    data, dets = _crafted()
    dets = dets + [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.1},
                   {"image_id": 777, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.1}]
    with pytest.raises(EvaluationError, match=r"dets.json: 2 detections refer to 2 image ids .*777, 999.*gt.json"):
        coco_evaluate(_coco(data), dets, gt_name="gt.json", det_name="dets.json")


def test_mismatched_category_ids_are_named():
    data, dets = _crafted()
    dets = dets + [{"image_id": 10, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.1}]
    with pytest.raises(EvaluationError, match=r"category ids that are not in gt.json: 3 .*1, 5, 9"):
        coco_evaluate(_coco(data), dets, gt_name="gt.json", det_name="dets.json")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image_id": 10, "category_id": 1, "bbox": [0, 0, 5], "score": 0.1}, "expected 4 finite numbers"),
        ({"image_id": 10, "category_id": 1, "bbox": [50, 50, 10, -5], "score": 0.1}, "negative width or height"),
        ({"image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5]}, "lacks score"),
        ({"image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "score": float("nan")}, "finite number"),
    ],
)
def test_malformed_detection_entries(bad, message):
    data, dets = _crafted()
    with pytest.raises(EvaluationError, match=message):
        coco_evaluate(_coco(data), dets + [bad])


def test_load_errors(tmp_path):
    with pytest.raises(EvaluationError, match="file not found"):
        load_coco_gt(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(EvaluationError, match="not valid json"):
        load_detections(tmp_path / "bad.json")
    data, dets = _crafted()
    (tmp_path / "gt.json").write_text(json.dumps(data))
    with pytest.raises(EvaluationError, match="looks like a COCO ground-truth file"):
        load_detections(tmp_path / "gt.json")
    (tmp_path / "nocats.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(EvaluationError, match="no 'categories' list"):
        load_coco_gt(tmp_path / "nocats.json")
    gt = load_coco_gt(tmp_path / "gt.json")
    assert sorted(gt.getImgIds()) == [10, 11, 12, 13]


def _ann_of(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


# Ground truth given to eval.py --ann is validated like a training set (same checks and messages as the
# dataset readers): name the file, the annotation (or entry) and what is wrong.
GT_CASES = {
    "annotation_not_an_object": (lambda d: d["annotations"].insert(1, "oops"), r"annotations\[1\]: annotation is not an object"),
    "annotations_all_numbers": (lambda d: d.update(annotations=[1, 2]), r"annotations\[0\]: annotation is not an object.*\(and 1 more problem\)"),
    "nan_box": (lambda d: _ann_of(d, 2).update(bbox=[math.nan, 1, 5, 5]), r"annotation id 2: box .* NaN or infinite"),
    "inf_box": (lambda d: _ann_of(d, 2).update(bbox=[1, 1, math.inf, 5]), r"annotation id 2: box .* NaN or infinite"),
    "negative_box": (lambda d: _ann_of(d, 3).update(bbox=[1, 1, -5, 5]), r"annotation id 3: box .* zero or negative"),
    "bbox_strings": (lambda d: _ann_of(d, 1).update(bbox=["1", 2, 3, 4]), r"annotation id 1: bbox must be 4 numbers"),
    "unknown_image": (lambda d: _ann_of(d, 1).update(image_id=77), r"annotation id 1: refers to image id 77"),
    "unknown_category": (lambda d: _ann_of(d, 1).update(category_id=4), r"annotation id 1: category id 4 is not"),
    "duplicate_id": (lambda d: _ann_of(d, 3).update(id=1), r"annotation id 1: duplicate annotation id"),
    "no_id": (lambda d: _ann_of(d, 2).pop("id"), r"annotations\[1\]: needs an integer 'id'"),
    "nan_area": (lambda d: _ann_of(d, 2).update(area=math.nan), r"annotation id 2: 'area' must be a finite number"),
    "no_area": (lambda d: _ann_of(d, 2).pop("area"), r"annotation id 2: 'area' must be a finite number"),
    "image_without_id": (lambda d: d["images"].append({"file_name": "x.jpg"}), r"images\[4\]: image entry needs an integer 'id'"),
    "category_not_object": (lambda d: d["categories"].append(7), r"categories\[3\]: category needs an integer 'id'"),
}


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_ground_truth_is_validated_like_a_dataset(case, tmp_path):
    data, _ = _crafted()
    mutate, message = GT_CASES[case]
    mutate(data)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))  # NaN / Infinity are written as the json extension literals, as tools do
    with pytest.raises(EvaluationError) as err:
        load_coco_gt(path)
    text = str(err.value)
    assert text.startswith(f"{path} ") and re.search(message, text), text
    assert "\n" not in text


def test_ground_truth_boxes_past_the_image_border_are_scored_as_given(tmp_path):
    data, dets = _crafted()
    _ann_of(data, 1).update(bbox=[-3.5, 10, 40, 30])  # the dataset readers clip (and warn); scoring keeps it
    (tmp_path / "gt.json").write_text(json.dumps(data))
    gt = load_coco_gt(tmp_path / "gt.json")
    assert gt.anns[1]["bbox"] == [-3.5, 10, 40, 30]
    assert [coco_evaluate(gt, dets).stats[k] for k in STAT_KEYS] == pytest.approx(list(_reference(data, dets)))


def test_detections_to_coco_maps_back_to_original_image_and_ids():
    # letterbox ratio 0.5: a 40x20 input-px box at (20, 10) is 80x40 at (40, 20) in the original image
    boxes = torch.tensor([[20.0, 10.0, 60.0, 30.0], [300.0, 200.0, 330.0, 260.0]])
    out = detections_to_coco(boxes, torch.tensor([0.9, 0.123456789]), torch.tensor([2, 0]), image_id=7,
                             category_ids=[1, 5, 9], ratio=0.5, orig_size=(480, 620))
    assert out[0] == {"image_id": 7, "category_id": 9, "bbox": [40.0, 20.0, 80.0, 40.0], "score": 0.9}
    # the second box is clipped to the 620 x 480 image
    assert out[1]["category_id"] == 1 and out[1]["bbox"] == [600.0, 400.0, 20.0, 80.0]
    assert out[1]["score"] == 0.12346
    assert detections_to_coco(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 7, [1]) == []
    with pytest.raises(EvaluationError, match="predicted class 3 but the dataset has 3 classes"):
        detections_to_coco(boxes, torch.ones(2), torch.tensor([3, 0]), 7, [1, 5, 9])


def test_pr_curve_png(tmp_path):
    from cspdet.engine.plots import plot_pr_curve

    data, dets = _random_case(4)
    metrics = coco_evaluate(_coco(data), dets)
    png = plot_pr_curve(metrics, tmp_path / "pr.png")
    import cv2

    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 10  # something was drawn


def test_summary_lines_match_pycocotools_layout():
    # the faster-coco-eval backend prints the 12 stats through this layout; it must be pycocotools' own
    from cspdet.engine.coco_metrics import _summary_lines

    data, dets = _random_case(6)
    ref = coco_evaluate(_coco(data), dets, backend="pycocotools")
    assert _summary_lines([ref.stats[k] for k in STAT_KEYS]).rstrip("\n") == ref.summary


@pytest.mark.skipif(not faster_coco_eval_available(), reason="optional faster-coco-eval is not installed")
@pytest.mark.parametrize("case", ["crafted", "random5", "empty"])
def test_faster_coco_eval_backend_is_identical(case):
    data, dets = _crafted() if case != "random5" else _random_case(5, n_images=20)
    if case == "empty":
        dets = []
    ref = coco_evaluate(_coco(data), dets, backend="pycocotools")
    gt = _coco(data)
    fast = coco_evaluate(gt, dets, backend="faster_coco_eval")
    assert gt.dataset == data  # the shared ground truth is left untouched
    assert fast.backend == "faster_coco_eval"
    assert fast.summary == ref.summary  # the same 12 printed lines (faster-coco-eval prints its own elsewhere)
    for k in STAT_KEYS:
        assert fast.stats[k] == pytest.approx(ref.stats[k], abs=1e-12), k
    np.testing.assert_allclose(fast.precision, ref.precision, atol=1e-12)


# ------------------------------------------------------------------------------- with a model and a loader


class _GroundTruthReplay(torch.nn.Module):
    """Test double: its "predictions" are the loader's own letterboxed targets, batch by batch, so a correct
    mapping back to original pixels and category ids must score AP = 1."""

    def __init__(self, loader):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the evaluator finds the device from parameters
        self.batches = iter(loader)

    def predict(self, images, conf=0.25, iou=0.45, max_det=300):
        batch = next(self.batches)
        assert torch.equal(batch["images"].float(), images)
        out = []
        for t in batch["targets"].per_image():
            out.append({"boxes": t.boxes, "scores": torch.linspace(0.9, 0.5, len(t)), "labels": t.labels})
        return out


def _subset_evaluator(desc, img_size=(160, 128), batch_size=5, **kw):
    from cspdet.data import build_dataset, build_val_loader
    from cspdet.engine.evaluator import COCOEvaluator

    dataset = build_dataset(desc, "val")
    return COCOEvaluator(build_val_loader(dataset, img_size, batch_size, workers=0), **kw)


def test_letterbox_and_category_mapping_round_trip_scores_ap_1(coco128_subset):
    # non-square letterbox size and a ragged last batch (12 images, batch 5)
    evaluator = _subset_evaluator(coco128_subset)
    metrics = evaluator.evaluate(_GroundTruthReplay(evaluator.dataloader))
    assert metrics.num_images == 12
    assert metrics.stats["AP"] == pytest.approx(1.0) and metrics.stats["AR100"] == pytest.approx(1.0)
    assert all(c.ap == pytest.approx(1.0) for c in metrics.per_class if c.num_gt > 0)


def test_tiny_detector_results_equal_pycocotools_on_written_json(coco128_subset, tiny, tmp_path):
    cfg = tiny.config(num_classes=80)
    model = tiny.detector(cfg)
    evaluator = _subset_evaluator(coco128_subset, img_size=(128, 128), max_det=20)
    metrics = evaluator.evaluate(model, output_dir=tmp_path)
    assert model.training is False
    dets = json.loads((tmp_path / "detections.json").read_text())
    assert len(dets) == metrics.num_detections > 0
    gt = evaluator.coco_gt
    sizes = {i: (im["height"], im["width"]) for i, im in gt.imgs.items()}
    assert {d["image_id"] for d in dets} <= set(sizes) and {d["category_id"] for d in dets} <= set(gt.getCatIds())
    for d in dets:  # boxes are in the original image, not in the 128 x 128 letterboxed input
        x, y, w, h = d["bbox"]
        H, W = sizes[d["image_id"]]
        assert 0 <= x <= x + w <= W + 1e-3 and 0 <= y <= y + h <= H + 1e-3
    assert max(d["bbox"][0] + d["bbox"][2] for d in dets) > 128  # scaled up from the letterbox
    expected = _reference(gt.dataset, dets)
    np.testing.assert_array_equal(np.array([metrics.stats[k] for k in STAT_KEYS]), expected)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [saved[k] for k in STAT_KEYS] == [metrics.stats[k] for k in STAT_KEYS]
    from cspdet.engine.plots import EVAL_PLOTS

    for name in EVAL_PLOTS:  # PR, F1, P, R curves and the confusion matrices
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG") and (tmp_path / name).stat().st_size > 1000


def test_pre_nms_topk_caps_the_candidates_entering_nms(coco128_subset, tiny):
    model = tiny.detector(tiny.config(num_classes=80))
    evaluator = _subset_evaluator(coco128_subset, img_size=(128, 128), max_det=20, pre_nms_topk=3)
    per_image = evaluator.predict(model)
    assert len(per_image) == 12 and 0 < max(len(d) for d in per_image.values()) <= 3
    assert _subset_evaluator(coco128_subset, img_size=(128, 128), max_det=20).predict(model) != per_image
    with pytest.raises(ValueError, match="pre_nms_topk must be None or a positive integer"):
        _subset_evaluator(coco128_subset, pre_nms_topk=0)


def test_load_detector_for_eval_rejects_other_models(tiny, tmp_path):
    from cspdet.engine import CheckpointError
    from cspdet.engine.evaluator import load_detector_for_eval

    cfg = tiny.config()
    ckpt = tiny.write_checkpoint(tmp_path / "a.pt", cfg, tiny.names, [1, 2, 3])
    assert load_detector_for_eval(ckpt, cfg, tiny.names).num_classes == 3
    # the checkpoint's own spec decides the model; the config's model section does not matter ...
    other = tiny.config(num_classes=80)
    other.model.name = "cspdarknet_l"
    assert load_detector_for_eval(ckpt, other, tiny.names).num_classes == 3
    # ... but the dataset it is scored on must have as many classes
    with pytest.raises(CheckpointError, match=r"model has 3 classes but the evaluation dataset has 80"):
        load_detector_for_eval(ckpt, other, [str(i) for i in range(80)])
    with pytest.raises(CheckpointError, match="model has 3 classes but the evaluation dataset has 2"):
        load_detector_for_eval(ckpt, cfg, ["a", "b"])
    # a checkpoint whose class-name list does not match its own model (was: a StopIteration traceback)
    bad_names = tiny.write_checkpoint(tmp_path / "names.pt", cfg, tiny.names + ["hexagon"], [1, 2, 3, 4])
    with pytest.raises(CheckpointError, match="names.pt: checkpoint has 4 class names for a model with 3 classes"):
        load_detector_for_eval(bad_names, cfg, tiny.names)
    # an official YOLOX checkpoint is routed to the YOLOX loader (here one that does not fit the model)
    from cspdet.engine import save_checkpoint

    save_checkpoint({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(5, 12, 3, 3)}},
                    tmp_path / "yolox.pth")
    with pytest.raises(CheckpointError, match="yolox.pth: YOLOX weights do not fit the detector"):
        load_detector_for_eval(tmp_path / "yolox.pth", cfg, tiny.names)


def test_the_heads_eval_defaults_are_used_unless_the_config_sets_its_own(coco128_subset, tiny):
    """conf / iou / max_det left unset (``eval.conf: null``, ...) are the evaluated head's
    :class:`HeadEvalDefaults`; a value set in the config wins. For the YOLOX head the defaults are the values the
    evaluator always used, so its detections (and mAP) are exactly those of the explicit settings."""
    import dataclasses

    from cspdet.engine.evaluator import COCOEvaluator
    from cspdet.models import DecoupledHead

    class StrictHead(DecoupledHead):  # the YOLOX head with its own evaluation convention
        @property
        def eval_defaults(self):
            return dataclasses.replace(super().eval_defaults, conf=0.2, iou=0.5, max_det=7)

    yolox = tiny.detector(tiny.config(num_classes=80))
    strict = copy.deepcopy(yolox)
    strict.head.__class__ = StrictHead  # same weights, only the defaults differ
    cfg = tiny.config(num_classes=80)
    cfg.data.dataset = str(coco128_subset)
    assert (cfg.eval.conf, cfg.eval.iou, cfg.eval.max_det) == (None, None, None)
    evaluator = COCOEvaluator.from_config(cfg)

    default = evaluator.predict(yolox)
    assert evaluator.last_settings == {"conf": 0.001, "iou": 0.65, "max_det": 300, "multi_label": False,
                                       "nms_free": False}  # YOLOX's convention: single-label, NMS
    explicit = _subset_evaluator(coco128_subset, img_size=(128, 128), conf=0.001, iou=0.65, max_det=300)
    assert explicit.predict(yolox) == default  # YOLOX: identical detections, so identical mAP

    got = evaluator.predict(strict)
    assert evaluator.last_settings == {"conf": 0.2, "iou": 0.5, "max_det": 7, "multi_label": False, "nms_free": False}
    assert got != default and 0 < sum(map(len, got.values())) < sum(map(len, default.values()))
    assert all(len(d) <= 7 and all(x["score"] >= 0.2 for x in d) for d in got.values())
    same = _subset_evaluator(coco128_subset, img_size=(128, 128), conf=0.2, iou=0.5, max_det=7)
    assert same.predict(yolox) == got
    assert evaluator.evaluate(strict, plots=False).extra["max_det"] == 7  # metrics.json records what was used

    cfg.eval.max_det = 300  # set in the config: wins over the head's 7; the unset conf / iou stay the head's
    mixed = COCOEvaluator.from_config(cfg)
    assert mixed.settings_for(strict) == {"conf": 0.2, "iou": 0.5, "max_det": 300, "multi_label": False}
    assert mixed.predict(strict) == _subset_evaluator(coco128_subset, img_size=(128, 128), conf=0.2, iou=0.5,
                                                      max_det=300).predict(yolox)
