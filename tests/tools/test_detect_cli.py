"""tools/detect.py on images, a folder, a glob and a video; bad inputs; missing or wrong weights."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

SUMMARY = re.compile(r"^(?P<name>\S+): (?P<what>no detections|\d+ \w+(, \d+ \w+)*) \((?P<ms>\d+) ms\)$")


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    cv2.circle(image, (w // 2, h // 2), min(h, w) // 4, (20, 200, 40), -1)
    return image


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(d / "street.jpg"), _image(120, 160, 0))
    cv2.imwrite(str(d / "shapes.png"), _image(96, 96, 1))
    folder = d / "folder"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), _image(64, 80, 2))
    cv2.imwrite(str(folder / "b.png"), _image(80, 64, 3))
    video = d / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(3):
        writer.write(_image(64, 96, 10 + i))
    writer.release()
    bad = d / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("this is text, not a picture")
    ok, buf = cv2.imencode(".jpg", _image(64, 64, 4))
    (bad / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (bad / "broken.mp4").write_bytes(b"\x00\x01" * 200)
    cv2.imwrite(str(bad / "good.jpg"), _image(64, 64, 5))
    return d


def test_jpg_png_folder_glob_and_video(shapes_weights, inputs, tmp_path, run_tool):
    out = tmp_path / "out"
    proc = run_tool("detect.py", inputs / "street.jpg", inputs / "shapes.png", inputs / "folder",
                    inputs / "*.avi", "--weights", shapes_weights, "--conf", "0.2", "--out", out,
                    "--save-json", "--save-txt")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    image_lines = [m for m in map(SUMMARY.match, lines) if m]
    assert [m["name"] for m in image_lines] == ["street.jpg", "shapes.png", "a.jpg", "b.png"]
    assert sum(line.startswith("clip.avi frame ") for line in lines) == 3
    assert lines[-1].startswith("done: 4 images, 3 video frames")
    for name in ("street.jpg", "shapes.png", "a.jpg", "b.png"):
        drawn = cv2.imread(str(out / name))
        assert drawn is not None
    assert cv2.imread(str(out / "street.jpg")).shape == (120, 160, 3)  # original size, not the letterbox
    det = json.loads((out / "street.json").read_text())
    assert (det["width"], det["height"]) == (160, 120)
    for d in det["detections"]:
        assert set(d) >= {"box", "score", "class_id", "class_name", "category_id"}
        assert 0 <= d["box"][0] <= d["box"][2] <= 160 and 0 <= d["box"][1] <= d["box"][3] <= 120
        assert d["class_name"] in ("circle", "square", "triangle") and d["score"] >= 0.2
    txt = (out / "labels" / "street.txt").read_text().splitlines()
    assert len(txt) == len(det["detections"])
    assert all(len(t.split()) == 5 and all(0 <= float(v) <= 1 for v in t.split()[1:]) for t in txt)
    cap = cv2.VideoCapture(str(out / "clip.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3
    assert len(json.loads((out / "clip.json").read_text())["frames"]) == 3


def test_batch_and_fast_path_give_the_same_detections(shapes_weights, inputs, tmp_path, run_tool):
    """--batch 3 (one forward pass for a folder's images and for video frames) and --channels-last write what
    --batch 1 writes: the same detections per image and per frame."""
    outs = {}
    for name, extra in (("one", ("--batch", "1")), ("three", ("--batch", "3")),
                        ("fast", ("--batch", "3", "--channels-last"))):
        out = tmp_path / name
        proc = run_tool("detect.py", inputs / "street.jpg", inputs / "folder", inputs / "clip.avi", "--weights",
                        shapes_weights, "--conf", "0.2", "--out", out, "--save-json", "--no-save", *extra)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1].startswith("done: 3 images, 3 video frames")
        outs[name] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    assert sorted(outs["one"]) == ["a.json", "b.json", "clip.json", "street.json"]

    def boxes(doc):
        items = doc["frames"] if "frames" in doc else [doc]
        return [[(d["class_id"], d["score"], *d["box"]) for d in item["detections"]] for item in items]

    n = 0
    for name, doc in outs["one"].items():
        want = boxes(doc)
        n += sum(map(len, want))
        for other in ("three", "fast"):
            got = boxes(outs[other][name])
            assert [len(g) for g in got] == [len(w) for w in want], (other, name)
            for g, w in zip(got, want):
                assert np.allclose(np.array(g, float).reshape(-1, 6), np.array(w, float).reshape(-1, 6), atol=1e-3)
    assert n > 0


def test_bad_items_fail_alone(shapes_weights, inputs, tmp_path, run_tool):
    bad = inputs / "bad"
    proc = run_tool("detect.py", bad, bad / "missing.jpg", inputs / "nothing*.jpg", "--weights", shapes_weights,
                    "--out", tmp_path / "out", "--classes", "square", "circle")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.search(r"^good\.jpg: .* \(\d+ ms\)$", proc.stdout, re.M)  # the good one still ran
    errors = [e for e in proc.stderr.strip().splitlines() if e.startswith("cspdet predict: error:")]
    assert len(errors) == len(proc.stderr.strip().splitlines()) == 6, proc.stderr
    text = "\n".join(errors)
    for expected in ("empty.jpg: empty file", "notes.png: cannot decode", "cut.jpg: truncated JPEG",
                     "broken.mp4", "missing.jpg: image file not found", "nothing*.jpg: no files match"):
        assert expected in text, text
    assert proc.stdout.strip().splitlines()[-1].startswith("done: 1 image, 6 failed")


def test_no_weights_explains_how_to_get_them(inputs, run_tool):
    proc = run_tool("detect.py", inputs / "street.jpg")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "no --weights" in line and "cspdet train" in line and "YOLOX" in line


def test_wrong_checkpoint_and_unknown_class(shapes_weights, inputs, tmp_path, run_tool):
    import torch

    from cspdet.engine import save_checkpoint

    ckpt = torch.load(shapes_weights, weights_only=True)
    ckpt["spec"]["head"]["num_classes"] = 80  # weights of a 3-class model under an 80-class spec
    ckpt["meta"]["preset"] = "cspdarknet_nano"
    save_checkpoint(ckpt, tmp_path / "other.pt")
    proc = run_tool("detect.py", inputs / "street.jpg", "--weights", tmp_path / "other.pt", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "other.pt: weights do not" in line and "cspdarknet_nano" in line
    proc = run_tool("detect.py", inputs / "street.jpg", "--weights", shapes_weights, "--classes", "dog")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "unknown class 'dog'; the model's classes are: circle, square, triangle" in line


def test_noise_video_and_yolox_weights_give_one_line(inputs, tmp_path, run_tool, shapes_weights):
    import torch

    # random bytes with a video suffix: OpenCV's own "[ WARN ...]" lines must not add to our one line
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    proc = run_tool("detect.py", tmp_path / "noise.mp4", inputs / "street.jpg", "--weights", shapes_weights,
                    "--out", tmp_path / "o")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("cspdet predict: error:") and "noise.mp4" in line
    assert re.search(r"^street\.jpg: .* \(\d+ ms\)$", proc.stdout, re.M)
    # an official YOLOX checkpoint: say what it is and how to use it, not "set model.weights"
    torch.save({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(16, 12, 3, 3)}}, tmp_path / "y.pth")
    proc = run_tool("detect.py", inputs / "street.jpg", "--weights", tmp_path / "y.pth")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "y.pth: this is an official YOLOX checkpoint" in line and "cspdet convert" in line


def test_out_of_range_options_are_refused(inputs, shapes_weights, run_tool):
    for option, value, message in [("--conf", "2", "value 2.0 out of range [0, 1]"),
                                   ("--iou", "-0.1", "value -0.1 out of range [0, 1]"),
                                   ("--max-det", "0", "value 0 out of range [1, inf)"),
                                   ("--img-size", "16", "value 16 out of range [32, 8192]"),
                                   ("--img-size", "100000", "value 100000 out of range [32, 8192]")]:
        proc = run_tool("detect.py", inputs / "street.jpg", "--weights", shapes_weights, option, value)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == f"cspdet predict: error: argument {option}: {message}"


def test_truncated_video_warns_and_fails_under_strict(shapes_weights, tmp_path, run_tool):
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(30):
        writer.write(_image(64, 96, i))
    writer.release()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    proc = run_tool("detect.py", path, "--weights", shapes_weights, "--out", tmp_path / "o")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    read = int(re.search(r"decoded (\d+) of the 30 frames", line).group(1))
    assert 0 < read < 30 and line.startswith(f"cspdet predict: WARNING: {path}: decoded {read} of the 30 frames")
    assert f"done: 0 images, {read} video frames" in proc.stdout
    assert (tmp_path / "o" / "cut.avi").is_file() and not list((tmp_path / "o").glob(".*"))
    proc = run_tool("detect.py", path, "--weights", shapes_weights, "--out", tmp_path / "o", "--strict")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"cspdet predict: error: {path}: decoded {read} of the 30 frames its container declares; the video "
                    "is truncated or damaged")


def test_read_only_out_is_one_line(shapes_weights, inputs, run_tool, small_tmpfs):
    disk = small_tmpfs("1m")
    small_tmpfs.read_only(disk)
    proc = run_tool("detect.py", inputs / "street.jpg", "--weights", shapes_weights, "--out", disk / "det")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"cspdet predict: error: cannot write {disk / 'det'}: read-only file system"]
