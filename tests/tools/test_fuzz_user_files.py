"""Fuzz the other files a user hands over: weights (``.pt`` / ``.pth`` / ``.onnx`` / OpenVINO ``.xml``: truncated,
emptied, flipped, of another kind), config YAMLs (wrong shapes and types, alias bombs, broken ``_base_``), videos
(truncated, zero-length, another container) and detections json for ``cspdet val --results``.

Each case goes through the entry point a user runs (``cspdet predict`` / ``cspdet val`` in this process, the config
loader and the model builder a training run uses). The property: success, or an exit code with one-line
``error`` messages (the project's own error types inside) -- never a traceback, an exception of another type, a hang
or a crash. Seeds and counts: tests/fuzzing.py (``CSPDET_FUZZ_SEED``, ``CSPDET_FUZZ_CASES``).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from fuzzing import cases, cli_outcome, junk_value, mutate_bytes, mutate_text, mutate_tree, one_line, run_family

from cspdet.config import ConfigError, load_config

TEST = "tests/tools/test_fuzz_user_files.py::"


def _cli(func, argv: list[str]) -> tuple[int, str, str]:
    """A CLI entry point run in this process: (exit code, stdout, stderr); argparse's SystemExit is an exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = func([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """The valid originals the cases damage, made once: a tiny detector checkpoint, its YOLOX-layout state dict,
    its ONNX export, an image, two videos, a config, COCO ground truth and detections."""
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
    from cspdet.models import DetectorMeta, create_detector

    d = tmp_path_factory.mktemp("fuzz_base")
    torch.manual_seed(0)
    model = create_detector("cspdarknet_nano", num_classes=2, width=0.125, prior_prob=0.5)
    meta = DetectorMeta(["cat", "dog"], [1, 2], img_size=(64, 64))
    save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict()), d / "w.pt")
    torch.save({"model": {k: v.clone() for k, v in list(model.state_dict().items())[:6]}}, d / "yolox.pth")
    files = {"pt": (d / "w.pt").read_bytes(), "pth": (d / "yolox.pth").read_bytes()}
    try:
        from cspdet.export.exporters import export_model

        export_model(d / "w.pt", "onnx", img_size=64, out=d / "w.onnx", simplify=False)
        files["onnx"] = (d / "w.onnx").read_bytes()
    except Exception as err:  # noqa: BLE001 - no ONNX extra here: the other kinds still run
        print(f"fuzz: no ONNX base file ({type(err).__name__}: {err})")
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    cv2.imwrite(str(d / "img.png"), image)
    videos = {}
    for suffix, fourcc in ((".avi", "MJPG"), (".mp4", "mp4v")):
        writer = cv2.VideoWriter(str(d / f"v{suffix}"), cv2.VideoWriter_fourcc(*fourcc), 5, (64, 48))
        for k in range(6):
            writer.write(np.roll(image, 8 * k, axis=1))
        writer.release()
        if (d / f"v{suffix}").is_file() and (d / f"v{suffix}").stat().st_size:
            videos[suffix] = (d / f"v{suffix}").read_bytes()
    config = {"model": {"name": "cspdarknet_nano", "num_classes": 2, "width": 0.125},
              "data": {"dataset": "data.yaml", "img_size": [64, 64], "workers": 0, "mosaic_prob": 0.5},
              "train": {"epochs": 2, "batch_size": 2, "lr_per_image": 0.0001, "optimizer": "sgd"},
              "eval": {"img_size": [64, 64], "conf": 0.001}}
    gt = {"images": [{"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"} for i in (1, 2)],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 10, 20, 30], "area": 600,
                           "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 4, 20, 19], "score": 0.9},
            {"image_id": 2, "category_id": 2, "bbox": [29, 11, 21, 30], "score": 0.7},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2}]
    return {"dir": d, "files": files, "image": d / "img.png", "videos": videos, "config": config, "gt": gt,
            "dets": dets}


# ------------------------------------------------------------------------------------------------- weights


def _weights_case(seed: int, base: dict, tmp: Path) -> str:
    from cspdet.cli.predict import predict

    rng = random.Random(seed)
    kind = rng.choice(sorted(base["files"]) + ["xml"])
    what = rng.random()
    path = tmp / f"w_{seed}.{kind}"
    if kind == "xml":  # an OpenVINO IR that is not one: garbage, truncated, or without its .bin
        xml = ('<?xml version="1.0"?><net name="m" version="11"><layers><layer id="0" name="images" type="Parameter" '
               'version="opset1"><data shape="1,3,64,64" element_type="f32"/><output><port id="0" precision="FP32">'
               '<dim>1</dim><dim>3</dim><dim>64</dim><dim>64</dim></port></output></layer></layers><edges/></net>')
        data = mutate_text(xml, rng).encode() if what < 0.6 else mutate_bytes(xml.encode(), rng)
        if rng.random() < 0.5:
            path.with_suffix(".bin").write_bytes(rng.randbytes(rng.randint(0, 64)))
    elif what < 0.45:
        data = mutate_bytes(base["files"][kind], rng)
    elif what < 0.75 and kind == "pt":  # a readable checkpoint whose spec / meta / entries are damaged
        ckpt = torch.load(io.BytesIO(base["files"]["pt"]), weights_only=True)
        head = {k: v for k, v in ckpt.items() if k != "model"}
        head = mutate_tree(json.loads(json.dumps(head)), rng, n=rng.randint(1, 3))
        if isinstance(head, dict):
            ckpt = {**head, "model": ckpt["model"]}
            if rng.random() < 0.2:  # and a weight of the wrong shape or dtype
                key = rng.choice(sorted(ckpt["model"]))
                ckpt["model"][key] = rng.choice([torch.zeros(3), torch.zeros((), dtype=torch.int64), "w"])
        buf = io.BytesIO()
        torch.save(ckpt if isinstance(head, dict) else head, buf)
        data = buf.getvalue()
    elif what < 0.75:
        data = mutate_bytes(base["files"][kind], rng)
    elif what < 0.85:  # a file of another kind under this name
        other = rng.choice([k for k in base["files"] if k != kind] or [kind])
        data = rng.choice([base["files"][other], base["image"].read_bytes(), b"{}", b"\x80\x04K\x01."])
    else:  # a valid torch archive holding something else
        buf = io.BytesIO()
        obj = rng.choice([
            [1, 2, 3], "weights", {"format": "cspdet", "kind": "detector", "version": junk_value(rng)},
            {"format": "cspdet", "kind": "detector", "version": 2, "spec": junk_value(rng), "meta": {}, "model": {}},
            {"model": {"w": torch.zeros(3)}}, {"state_dict": junk_value(rng)}, torch.zeros(2, 2),
        ])
        torch.save(obj, buf)
        data = buf.getvalue()
    path.write_bytes(data)
    code, out, err = _cli(predict, [base["image"], "--weights", path, "--out", tmp / "pred", "--no-save",
                                    "--device", "cpu"])
    return cli_outcome(code, out, err, f"predict --weights {path.name} ({kind})", error_codes=(2,))


def test_fuzz_weights_files(base, tmp_path, request):
    run_family("weights", TEST + "test_fuzz_weights_files", cases("weights", 0.15),
               lambda seed: _weights_case(seed, base, tmp_path), request)


# ------------------------------------------------------------------------------------------------- configs


def _config_case(seed: int, base: dict, tmp: Path) -> str:
    from cspdet.engine.build import build_detector

    rng = random.Random(seed)
    path = tmp / f"c_{seed}.yaml"
    cfg = json.loads(json.dumps(base["config"]))
    what = rng.random()
    if what < 0.5:
        text = yaml.safe_dump(mutate_tree(cfg, rng, n=rng.randint(1, 3)))
    elif what < 0.65:
        text = mutate_text(yaml.safe_dump(cfg), rng)
    elif what < 0.75:  # a YAML alias bomb somewhere
        section = rng.choice(["model", "data", "train", "eval"])
        key = rng.choice(list(cfg[section]) + ["name"])
        bomb = "b0: &b0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"b{i + 1}: &b{i + 1} [*b{i}, *b{i}, *b{i}, *b{i}, *b{i}, *b{i}, *b{i}]\n" for i in range(7))
        cfg[section][key] = "BOMB"
        text = bomb + yaml.safe_dump(cfg).replace("BOMB", "*b7")
    elif what < 0.85:  # _base_ that is missing, a cycle, a folder, binary, or of the wrong type
        target = rng.choice([f"c_{seed}.yaml", "missing.yaml", ".", "junk.bin", 7, [1], "/dev/null"])
        (tmp / "junk.bin").write_bytes(rng.randbytes(64))
        text = yaml.safe_dump({"_base_": target, **cfg})
    elif what < 0.92:
        text = rng.choice(["", "- a\n- b\n", "7\n", "null\n", "model: 3\n", "model: [1, 2]\n", "data:\n  - x\n",
                           "!!python/object/apply:os.system ['true']\n", "model: {name: !!binary aGk=}\n"])
    else:
        path.write_bytes(mutate_bytes(yaml.safe_dump(cfg).encode(), rng))
        text = None
    if text is not None:
        path.write_text(text)
    overrides = [rng.choice(["train.epochs=-1", "model.num_classes=0", "data.img_size=[63]", "eval.conf=2",
                             "model.width=nan", "train.lr_per_image=inf", "data.img_size=[[1]]", "x.y=1", "model=1",
                             "train.epochs=1e999", "data.cache=ram"])] if rng.random() < 0.2 else []
    try:
        cfg_obj = load_config(path, overrides)
    except ConfigError as err:
        one_line(str(err), "config loader")
        return "error"
    try:  # what a training run does next: build the model its model section describes
        with torch.device("meta"):
            build_detector(cfg_obj.model)
    except ConfigError as err:
        one_line(str(err), "model builder")
        return "error"
    return "clean"


def test_fuzz_config_files(base, tmp_path, request):
    run_family("config", TEST + "test_fuzz_config_files", cases("config", 0.3),
               lambda seed: _config_case(seed, base, tmp_path), request)


# -------------------------------------------------------------------------------------------------- videos


def _video_case(seed: int, base: dict, tmp: Path) -> str:
    from cspdet.cli.predict import predict

    rng = random.Random(seed)
    suffix = rng.choice(sorted(base["videos"]) + [".mkv"])
    original = base["videos"].get(suffix) or next(iter(base["videos"].values()))
    what = rng.random()
    if what < 0.55:
        data = mutate_bytes(original, rng)
    elif what < 0.65:
        data = b""
    elif what < 0.75:
        data = original[: rng.randrange(len(original))]
    elif what < 0.9:  # another container or no video at all under a video name
        data = rng.choice([v for v in base["videos"].values()] + [base["image"].read_bytes(), b"hello", b"\x00" * 999])
    else:
        data = original
    path = tmp / f"v_{seed}{suffix}"
    path.write_bytes(data)
    args = [path, "--weights", base["dir"] / "w.pt", "--out", tmp / "vout", "--device", "cpu", "--batch", "4"]
    if rng.random() < 0.7:
        args.append("--no-save")  # writing the drawn video is its own path, but slow
    if rng.random() < 0.3:
        args.append("--strict")
    code, out, err = _cli(predict, args)
    return cli_outcome(code, out, err, f"predict {path.name}", error_codes=(1,))


def test_fuzz_video_files(base, tmp_path, monkeypatch, request):
    if not base["videos"]:
        pytest.skip("this OpenCV build writes no video")
    from cspdet.runtime.predictor import Predictor

    # the weights are not what is fuzzed here: load them once (a safe torch.load is most of a small case's time)
    predictor = Predictor.from_checkpoint(base["dir"] / "w.pt", device="cpu", batch_size=4)
    monkeypatch.setattr(Predictor, "from_checkpoint", classmethod(lambda cls, *args, **kwargs: predictor))
    run_family("video", TEST + "test_fuzz_video_files", cases("video", 0.1),
               lambda seed: _video_case(seed, base, tmp_path), request)


# ------------------------------------------------------------------------------------------- val --results


def _results_case(seed: int, base: dict, tmp: Path) -> str:
    from cspdet.cli.val import val

    rng = random.Random(seed)
    gt, dets = json.loads(json.dumps(base["gt"])), json.loads(json.dumps(base["dets"]))
    what = rng.random()
    gt_path, det_path = tmp / f"gt_{seed}.json", tmp / f"dets_{seed}.json"
    gt_text = json.dumps(gt)
    if what < 0.5:
        det_text = json.dumps(mutate_tree(dets, rng, n=rng.randint(1, 3)))
    elif what < 0.6:
        det_text = mutate_text(json.dumps(dets, indent=1), rng)
    elif what < 0.65:
        det_text = "[" * rng.choice([50, 100000])
    elif what < 0.75:
        det_text = json.dumps(dets * rng.choice([2, 1000]))  # duplicates
    elif what < 0.9:  # the ground truth damaged instead
        det_text, gt_text = json.dumps(dets), json.dumps(mutate_tree(gt, rng, n=rng.randint(1, 3)))
    else:
        det_text = None
        det_path.write_bytes(mutate_bytes(json.dumps(dets).encode(), rng))
    gt_path.write_text(gt_text)
    if det_text is not None:
        det_path.write_text(det_text)
    code, out, err = _cli(val, ["--ann", gt_path, "--results", det_path, "--no-plots", "--out", tmp / "val"])
    return cli_outcome(code, out, err, f"val --results {det_path.name}", error_codes=(2,))


def test_fuzz_val_results_files(base, tmp_path, request):
    run_family("val-results", TEST + "test_fuzz_val_results_files", cases("val-results", 0.3),
               lambda seed: _results_case(seed, base, tmp_path), request)
