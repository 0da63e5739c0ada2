"""cspdet.runtime.predictor: the Python inference API on a tiny real detector."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from cspdet.data import ImageReadError, Letterbox
from cspdet.engine import CheckpointError, save_checkpoint
from cspdet.runtime.predictor import Predictor, Results, expand_source


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    cv2.rectangle(image, (w // 4, h // 4), (w // 2, h // 2), (250, 30, 30), -1)
    return image


@pytest.fixture(scope="module")
def predictor(tiny) -> Predictor:
    cfg = tiny.config()
    return Predictor(tiny.detector(cfg), tiny.names, img_size=128, conf=0.2, iou=0.5, max_det=50)


def test_results_are_in_original_coordinates_and_match_the_manual_pipeline(predictor):
    image = _photo(90, 200)  # wide: letterbox ratio 128 / 200, padding at the bottom
    (res,) = predictor(image)
    assert isinstance(res, Results) and len(res) > 0 and res.path is None
    assert res.boxes.dtype == np.float32 and res.boxes.shape == (len(res), 4)
    assert res.scores.shape == res.labels.shape == (len(res),) and res.labels.dtype == np.int64
    assert np.all(np.diff(res.scores) <= 0) and res.scores.min() >= 0.2 and len(res) <= 50
    assert res.names == [predictor.class_names[i] for i in res.labels]
    assert res.boxes[:, 0::2].max() <= 200 and res.boxes[:, 1::2].max() <= 90 and res.boxes.min() >= 0
    # same as: letterbox -> Detector.predict -> / ratio -> clip; rect (the default) pads the 58 x 128 resized
    # image only to 64 x 128 (the next multiple of the stride), with the same ratio as the 128 x 128 square
    batch, ratios = predictor.preprocess([image])
    assert batch.shape == (1, 3, 64, 128) and batch.dtype == torch.float32 and ratios == [128 / 200]
    square = Predictor(predictor.model, predictor.class_names, img_size=128, conf=0.2, iou=0.5, max_det=50, rect=False)
    assert square.preprocess([image])[0].shape == (1, 3, 128, 128)
    for runner, size in ((predictor, (64, 128)), (square, (128, 128))):
        (res,) = runner(image)
        boxed, r = Letterbox(size).apply(image)
        assert r == 128 / 200
        (ref,) = runner.model.predict(torch.from_numpy(boxed).permute(2, 0, 1)[None].float(), conf=0.2, iou=0.5,
                                      max_det=50)
        expected = (ref["boxes"].numpy() / r).clip(0, [200, 90, 200, 90])
        np.testing.assert_allclose(res.boxes, expected, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(res.labels, ref["labels"].numpy())


def test_rect_batches_share_one_shape_that_holds_every_image(predictor):
    """A batch of a wide and a tall image is padded to the stride multiple holding both resized images (here the
    full 128 x 128); each keeps its own ratio, and its boxes equal those of the image predicted alone at that
    shape (rect=False), since the rest of the batch does not leak into an image's detections."""
    wide, tall = _photo(90, 200, 3), _photo(200, 90, 4)
    batch, ratios = predictor.preprocess([wide, tall])
    assert batch.shape == (2, 3, 128, 128) and ratios == [128 / 200, 128 / 200]
    assert torch.all(batch[0, :, 58:] == 114) and torch.all(batch[1, :, :, 58:] == 114)  # padding only
    square = Predictor(predictor.model, predictor.class_names, img_size=128, conf=0.2, iou=0.5, max_det=50, rect=False)
    together = predictor.predict_images([wide, tall])
    for got, image in zip(together, (wide, tall)):
        (alone,) = square.predict_images([image])
        np.testing.assert_allclose(got.boxes, alone.boxes, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(got.labels, alone.labels)


def test_paths_lists_folders_and_globs(predictor, tmp_path):
    a, b = _photo(100, 120, 1), _photo(64, 64, 2)
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(b, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    results = predictor([tmp_path / "a.jpg", str(tmp_path / "b.png"), b])
    assert [r.path for r in results] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png"), None]
    assert results[1].orig_size == (64, 64)
    np.testing.assert_array_equal(results[1].image, b)  # png is lossless; read as RGB
    # an array and the same image read from a lossless file give the same detections
    np.testing.assert_allclose(results[1].boxes, results[2].boxes)
    folder = predictor(tmp_path)  # a folder: its images, sorted; other files ignored
    assert [r.path for r in folder] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert [r.path for r in predictor(str(tmp_path / "*.png"))] == [str(tmp_path / "b.png")]
    with pytest.raises(FileNotFoundError, match="no files match"):
        expand_source(tmp_path / "*.gif")


def test_plot_json_txt(predictor):
    image = _photo(120, 160)
    (res,) = predictor(image)
    drawn = res.plot()
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and not np.array_equal(drawn, image)
    np.testing.assert_array_equal(res.plot(bgr=True), drawn[:, :, ::-1])
    np.testing.assert_array_equal(res.image, image)  # plot draws on a copy
    d = json.loads(res.to_json())
    assert (d["width"], d["height"]) == (160, 120) and len(d["detections"]) == len(res)
    first = d["detections"][0]
    assert set(first) == {"box", "score", "class_id", "class_name"}
    assert first["class_name"] == res.names[0] and first["box"] == pytest.approx(res.boxes[0].tolist(), abs=0.01)
    lines = res.to_txt().splitlines()
    assert len(lines) == len(res)
    cls, cx, cy, w, h = lines[0].split()
    assert int(cls) == res.labels[0]
    x1, y1, x2, y2 = res.boxes[0]
    assert float(cx) == pytest.approx((x1 + x2) / 2 / 160, abs=1e-5)
    assert float(h) == pytest.approx((y2 - y1) / 120, abs=1e-5)
    assert len(res.to_txt(with_conf=True).splitlines()[0].split()) == 6
    assert "circle" in res.summary() or "square" in res.summary() or "triangle" in res.summary()


def test_labels_of_boxes_at_the_right_border_stay_inside_the_image():
    image = np.full((60, 200, 3), 255, np.uint8)
    res = Results(image=image, boxes=np.array([[185, 30, 199, 59]], np.float32), scores=np.array([0.9], np.float32),
                  labels=np.array([0]), class_names=["a rather long class name"])
    drawn = res.plot(line_width=1)
    label_rows = drawn[:28]  # the filled label box sits above the box (y1 = 30)
    changed = np.nonzero((label_rows != 255).any(axis=2))[1]
    # the label (about 130 px wide) is shifted left of the box instead of running off the right border
    assert changed.min() < 100 and changed.max() <= 199


def test_empty_results():
    res = Results(image=np.zeros((10, 20, 3), np.uint8), boxes=np.zeros((0, 4), np.float32),
                  scores=np.zeros(0, np.float32), labels=np.zeros(0, np.int64), class_names=["a"])
    assert res.summary() == "no detections" and res.to_txt() == "" and res.to_dict()["detections"] == []
    np.testing.assert_array_equal(res.plot(), res.image)


def test_class_filter_by_name_or_index(tiny):
    cfg = tiny.config()
    model = tiny.detector(cfg)
    image = _photo(128, 128)
    everything = Predictor(model, tiny.names, img_size=128, conf=0.2)(image)[0]
    present = sorted(set(everything.labels.tolist()))
    only = Predictor(model, tiny.names, img_size=128, conf=0.2, classes=[tiny.names[present[0]]])(image)[0]
    assert len(only) > 0 and set(only.labels.tolist()) == {present[0]}
    assert Predictor(model, tiny.names, img_size=128, classes=["2", 0]).classes == [2, 0]
    with pytest.raises(ValueError, match="unknown class 'dog'; the model's classes are: circle, square, triangle"):
        Predictor(model, tiny.names, classes=["dog"])
    with pytest.raises(ValueError, match="class index 7 out of range"):
        Predictor(model, tiny.names, classes=[7])


def test_constructor_checks(tiny):
    model = tiny.detector(tiny.config())
    with pytest.raises(ValueError, match="multiple of the model stride 32"):
        Predictor(model, tiny.names, img_size=100)
    with pytest.raises(ValueError, match="model has 3 classes but 2 class names"):
        Predictor(model, ["a", "b"])
    # the ranges declared for eval.conf / eval.iou / eval.max_det (as detect.py --conf ...)
    for kwargs, message in [({"conf": 2.0}, r"conf 2.0 out of range \[0, 1\]"),
                            ({"iou": float("nan")}, r"iou nan out of range \[0, 1\]"),
                            ({"max_det": 0}, r"max_det 0 out of range \[1, inf\)")]:
        with pytest.raises(ValueError, match=rf"^Predictor: {message}$"):
            Predictor(model, tiny.names, **kwargs)


def test_bad_inputs_give_one_line_errors(predictor, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a picture")
    ok, buf = cv2.imencode(".jpg", _photo(64, 64))
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    for name, message in [("missing.jpg", "not found"), ("empty.jpg", "empty file"), ("text.jpg", "cannot decode"),
                          ("cut.jpg", "truncated")]:
        with pytest.raises(ImageReadError, match=message) as info:
            predictor(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((5, 5, 2), np.uint8))
    gray = predictor(np.full((40, 50), 128, np.uint8))[0]  # (H, W) gray is expanded to 3 channels
    assert gray.image.shape == (40, 50, 3)


def test_from_checkpoint(shapes_checkpoint):
    predictor = Predictor.from_checkpoint(shapes_checkpoint, device="cpu", conf=0.2)
    assert predictor.class_names == ["circle", "square", "triangle"] and predictor.img_size == (128, 128)
    assert predictor.category_ids == [1, 2, 3]
    unfused = Predictor.from_checkpoint(shapes_checkpoint, conf=0.2, fuse=False)
    image = _photo(96, 128)
    (a,), (b,) = predictor(image), unfused(image)
    # conv-BN fusion is exact up to float rounding
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    assert json.loads(a.to_json())["detections"][0]["category_id"] in (1, 2, 3)


def test_from_checkpoint_errors(shapes_checkpoint, tiny, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth: cannot read the checkpoint"):
        Predictor.from_checkpoint(tmp_path / "junk.pth")
    save_checkpoint({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(1)}}, tmp_path / "yolox.pth")
    with pytest.raises(CheckpointError, match="not a cspdet checkpoint"):
        Predictor.from_checkpoint(tmp_path / "yolox.pth")
    ckpt = torch.load(shapes_checkpoint, weights_only=True)
    # weights of a 3-class model under a spec that says 80 classes
    ckpt["spec"]["head"]["num_classes"] = 80
    save_checkpoint(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit|do not match"):
        Predictor.from_checkpoint(tmp_path / "mismatch.pt")
    ckpt["spec"]["head"]["num_classes"] = 3
    ckpt["meta"]["class_names"] = ["a", "b"]
    save_checkpoint(ckpt, tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match="2 class names for a model with 3 classes"):
        Predictor.from_checkpoint(tmp_path / "names.pt")
    ckpt["kind"] = "classifier"
    save_checkpoint(ckpt, tmp_path / "cls.pt")
    with pytest.raises(CheckpointError, match="classifier checkpoint, expected a detector"):
        Predictor.from_checkpoint(tmp_path / "cls.pt")


def test_video_frames(predictor, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(4):
        writer.write(cv2.cvtColor(_photo(64, 96, i), cv2.COLOR_RGB2BGR))
    writer.release()
    frames = list(predictor.predict_video(path))
    assert [r.frame for r in frames] == [0, 1, 2, 3] and frames[0].orig_size == (64, 96)
    # frames go batch_size at a time (here 3 + 1): the same results, in frame order, as one frame per pass
    one = Predictor(predictor.model, predictor.class_names, img_size=128, conf=0.2, iou=0.5, max_det=50,
                    batch_size=1)
    singles = list(one.predict_video(path))
    assert predictor.batch_size == 8
    predictor.batch_size = 3
    try:
        batched = list(predictor.predict_video(path))
    finally:
        predictor.batch_size = 8
    assert [r.frame for r in batched] == [0, 1, 2, 3]
    assert sum(len(r) for r in singles) > 0
    for a, b in zip(batched, singles):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.image, b.image)
    assert Predictor.video_fps(path) == pytest.approx(10)
    # a video named directly is an error, not an empty list; in a folder or glob it is skipped
    with pytest.raises(ImageReadError, match="clip.avi: is a video; use Predictor.predict_video"):
        predictor(path)
    assert predictor(tmp_path) == [] and predictor(str(tmp_path / "*.avi")) == []
    with pytest.raises(ImageReadError, match="gone.mp4: image file not found"):
        predictor(tmp_path / "gone.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 300)
    with pytest.raises(ImageReadError, match="junk.mp4"):
        list(predictor.predict_video(tmp_path / "junk.mp4"))


def _truncated_video(path, frames: int = 30):
    """A ``frames``-frame MJPG AVI cut to half its bytes: the container still declares ``frames`` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(frames):
        writer.write(cv2.cvtColor(_photo(64, 96, i), cv2.COLOR_RGB2BGR))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_video_is_reported_against_the_declared_frame_count(predictor, tmp_path, caplog):
    path = _truncated_video(tmp_path / "cut.avi")
    with caplog.at_level(logging.WARNING, logger="cspdet.runtime.predictor"):
        frames = list(predictor.predict_video(path))
    assert 0 < len(frames) < 30
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == (f"{path}: decoded {len(frames)} of the 30 frames its container declares; "
                                   "the video is truncated or damaged")
    with pytest.raises(ImageReadError, match=rf"cut.avi: decoded {len(frames)} of the 30 frames") as err:
        list(predictor.predict_video(path, strict=True))
    assert err.value.kind == "truncated_image"
    caplog.clear()
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(5):
        writer.write(cv2.cvtColor(_photo(64, 96, i), cv2.COLOR_RGB2BGR))
    writer.release()
    with caplog.at_level(logging.WARNING, logger="cspdet.runtime.predictor"):
        assert len(list(predictor.predict_video(whole, strict=True))) == 5
    assert not caplog.records  # a complete video: no warning


def test_top_level_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, cspdet; assert 'torch' not in sys.modules; "
            "from cspdet import Predictor; print(Predictor.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Predictor"
