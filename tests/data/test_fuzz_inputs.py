"""Fuzz the dataset readers: seeded damage to small COCO json, YOLO txt and Pascal VOC xml datasets (wrong types,
missing keys, truncation, duplicates, out-of-range values, paths that leave the dataset, XML entities, binary junk,
broken images, broken descriptors), each case through the reader (``build_dataset``), the doctor
(``check_dataset`` + its report) and one training step of a tiny model.

The property, for every case: a clean result, a counted skip with a warning, or a one-line :class:`DatasetError`
naming a file of the case; the doctor answers too and names at least every problem kind the reader counted;
the training step gives a finite loss. Never another exception type, a hang or a crash. Seeds and counts: see
tests/fuzzing.py (``CSPDET_FUZZ_SEED``, ``CSPDET_FUZZ_CASES``).
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fuzzing import cases, junk_value, mutate_bytes, mutate_text, mutate_tree, one_line, run_family

from cspdet.data import DatasetError, DatasetWarning, build_dataset
from cspdet.data.check import check_dataset, format_report
from cspdet.data.loader import build_train_loader

NAMES = ["a", "b", "c"]
IMAGES = {  # stem -> (h, w, [(label, x1, y1, x2, y2)])
    "000001": (32, 40, [(0, 2, 3, 20, 25), (2, 22, 4, 38, 30)]),
    "000002": (40, 32, [(1, 5, 5, 30, 35)]),
    "000003": (32, 32, []),
    "000004": (24, 48, [(0, 1, 1, 47, 23), (1, 10, 2, 20, 12)]),
}
# paths an annotation may name to leave its dataset
ESCAPES = ["../../../../../../../../etc/passwd", "/etc/passwd", "..", ".", "", "../images/../../x.png",
           "sub/../../000001.png", "\x00.png", "/", "~/x.png", "000001.png/..", "a" * 300]


@pytest.fixture(scope="module")
def image_bytes() -> dict[str, bytes]:
    out = {}
    for stem, (h, w, objs) in IMAGES.items():
        img = np.full((h, w, 3), 60, np.uint8)
        for label, x1, y1, x2, y2 in objs:
            img[y1:y2, x1:x2] = (255 * (label == 0), 255 * (label == 1), 255 * (label == 2))
        ok, buf = cv2.imencode(".png", img)
        assert ok
        out[stem] = buf.tobytes()
    return out


@pytest.fixture(scope="module")
def models():
    """Tiny detectors, built once per class count (a damaged dataset may have another one)."""
    from cspdet.models import create_detector

    cache: dict[int, torch.nn.Module] = {}

    def get(num_classes: int) -> torch.nn.Module:
        if num_classes not in cache:
            torch.manual_seed(0)
            cache[num_classes] = create_detector("cspdarknet_nano", num_classes=num_classes, width=0.125).train()
        return cache[num_classes]

    return get


# ------------------------------------------------------------------------------------------ clean datasets


def _coco(root: Path, images: dict[str, bytes]) -> dict:
    data = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]}
    for k, (stem, (h, w, objs)) in enumerate(IMAGES.items(), 1):
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / f"{stem}.png").write_bytes(images[stem])
        data["images"].append({"id": k, "file_name": f"{stem}.png", "height": h, "width": w})
        for label, x1, y1, x2, y2 in objs:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": k, "category_id": label + 1,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": 0})
    return {"format": "coco", "path": ".", "train": {"images": "images", "annotations": "ann.json"}}, data


def _yolo_lines(stem: str) -> list[str]:
    h, w, objs = IMAGES[stem]
    return [f"{lab} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for lab, x1, y1, x2, y2 in objs]


def _voc_xml(stem: str) -> str:
    h, w, objs = IMAGES[stem]
    objects = "".join(f"<object><name>{NAMES[lab]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
                      f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                      for lab, x1, y1, x2, y2 in objs)
    return (f"<annotation><filename>{stem}.png</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objects}</annotation>")


# -------------------------------------------------------------------------------------------- mutations


def _junk_yolo_line(rng: random.Random) -> str:
    field = lambda: rng.choice(["0", "1", "2", "3", "-1", "0.5", "1.5", "-0.2", "nan", "inf", "-inf", "1e999", "0x10",
                                "1_0", "1e-320", "abc", "", "0.0", "1", "\x00", "٣", "+0.5", ".5", "5."])  # noqa: E731
    n = rng.choice([0, 1, 4, 5, 5, 5, 6, 7, 9, 50])
    return " ".join(field() for _ in range(n))


def _voc_damage(xml: str, rng: random.Random) -> str:
    op = rng.randrange(11)
    if op == 0:  # entity expansion ("billion laughs")
        ents = '<!ENTITY a "aaaaaaaaaa">' + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
                                                      for p, c in zip("abcdefgh", "bcdefghi"))
        return f'<?xml version="1.0"?><!DOCTYPE annotation [{ents}]>' + xml.replace("<name>a</name>",
                                                                                     "<name>&i;</name>")
    if op == 1:  # an external entity: must never be read
        return ('<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                + xml.replace("<filename>", "<filename>&x;"))
    if op == 2:  # an undefined entity / a parameter entity
        return xml.replace("<name>", "<name>&undefined;", 1) if rng.random() < 0.5 else (
            '<!DOCTYPE a [<!ENTITY % p "x"> %p;]>' + xml)
    if op == 3:  # deep nesting
        depth = rng.choice([100, 5000, 30000])
        return xml.replace("</annotation>", "<o>" * depth + "</o>" * depth + "</annotation>")
    if op == 4:
        return xml.replace("<filename>", "<filename>" + rng.choice(ESCAPES) + "<!--", 1).replace(
            "</filename>", "--></filename>", 1)
    if op == 5:  # values of the wrong kind
        tag = rng.choice(["xmin", "ymin", "xmax", "ymax", "width", "height", "difficult", "name"])
        return xml.replace(f"<{tag}>", f"<{tag}>{junk_value(rng)!s}<x>", 1).replace(f"</{tag}>", f"</x></{tag}>", 1)
    if op == 6:  # an element removed
        tag = rng.choice(["bndbox", "name", "size", "filename", "xmin", "object"])
        start = xml.find(f"<{tag}>")
        end = xml.find(f"</{tag}>", start)
        return xml if start < 0 or end < 0 else xml[:start] + xml[end + len(tag) + 3:]
    if op == 7:  # duplicate objects
        start, end = xml.find("<object>"), xml.find("</object>")
        if start < 0:
            return xml
        return xml.replace("</annotation>", xml[start:end + 9] * rng.choice([1, 2, 500]) + "</annotation>")
    if op == 8:
        return xml.replace(">", ">" + str(rng.choice([-1e9, 1e30, 0, -5, "nan", "inf"])), 1)
    return mutate_text(xml, rng)


def _write_case(root: Path, fmt: str, rng: random.Random, images: dict[str, bytes]) -> Path:
    """One damaged dataset of format ``fmt`` under ``root``; returns its descriptor."""
    root.mkdir(parents=True)
    what = rng.random()
    if fmt == "coco":
        desc, data = _coco(root, images)
        text = None
        if what < 0.45:
            data = mutate_tree(data, rng, n=rng.randint(1, 4))
        elif what < 0.55:
            data["images"][rng.randrange(4)]["file_name"] = rng.choice(ESCAPES)
        elif what < 0.62:
            ann = data["annotations"][rng.randrange(len(data["annotations"]))]
            data["annotations"] += [dict(ann, id=1000 + k) for k in range(rng.choice([1, 10, 3000]))]
        elif what < 0.72:
            text = mutate_text(json.dumps(data, indent=1), rng)
        elif what < 0.76:
            text = "[" * rng.choice([100, 10000, 200000]) + "]" * rng.choice([0, 10])  # nesting bombs
        elif what < 0.80:
            (root / "ann.json").write_bytes(mutate_bytes(json.dumps(data).encode(), rng))
            data = None
        if data is not None:
            (root / "ann.json").write_text(text if text is not None else json.dumps(data))
    elif fmt == "yolo":
        desc = {"path": ".", "train": "images/train", "names": list(NAMES)}
        for stem in IMAGES:
            (root / "images" / "train").mkdir(parents=True, exist_ok=True)
            (root / "images" / "train" / f"{stem}.png").write_bytes(images[stem])
            lines = _yolo_lines(stem)
            if lines:
                (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
                (root / "labels" / "train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        label = root / "labels" / "train" / "000001.txt"
        if what < 0.4:
            lines = _yolo_lines("000001")
            for _ in range(rng.randint(1, 4)):
                lines.insert(rng.randrange(len(lines) + 1), _junk_yolo_line(rng))
            label.write_text("\n".join(lines))
        elif what < 0.5:
            label.write_bytes(mutate_bytes(label.read_bytes(), rng))
        elif what < 0.58:
            label.write_text("\n".join(_yolo_lines("000001") * rng.choice([2, 3000])))
        elif what < 0.68:
            lines = ["images/train/000001.png", rng.choice(ESCAPES), "./images/train/000002.png",
                     str(root / "images" / "train" / "000004.png")]
            (root / "list.txt").write_text("\n".join(lines) + "\n")
            desc["train"] = "list.txt"
        elif what < 0.74:
            label.unlink()
            label.mkdir()  # a directory where a label file should be
    else:
        desc = {"format": "voc", "path": ".", "train": "ImageSets/Main/train.txt", "names": list(NAMES)}
        for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for stem in IMAGES:
            (root / "JPEGImages" / f"{stem}.png").write_bytes(images[stem])
            (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem))
        sets = list(IMAGES)
        xml = root / "Annotations" / "000001.xml"
        if what < 0.5:
            xml.write_text(_voc_damage(_voc_xml("000001"), rng))
        elif what < 0.6:
            xml.write_bytes(mutate_bytes(xml.read_bytes(), rng))
        elif what < 0.7:
            sets.insert(rng.randrange(5), rng.choice(ESCAPES + ["000001", "000001 1", "# comment", "\x00"]))
        (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(sets) + "\n")
    if 0.80 <= what < 0.9:  # a damaged image
        stem = rng.choice(list(IMAGES))
        image = next(p for p in sorted(root.rglob("*.png")) if p.stem == stem)
        image.write_bytes(mutate_bytes(image.read_bytes(), rng))
    path = root / "data.yaml"
    import yaml

    if 0.9 <= what < 0.95:  # a damaged descriptor
        desc = mutate_tree(desc, rng, n=rng.randint(1, 2))
    text = yaml.safe_dump(desc) if not isinstance(desc, str) else desc
    if what >= 0.95:
        key = rng.choice(["names", "path", "train", "splits", "nc", "allow_outside", "format", "name", "category_ids"])
        # a YAML alias bomb: 9 * 7^7 leaves from a few lines of text
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh"))
        lines = [line for line in text.splitlines() if not line.startswith(key + ":")]
        text = rng.choice([
            mutate_text(text, rng),
            bomb + "\n".join(lines) + f"\n{key}: *h\n",
            text.replace("path: .", "path: " + rng.choice(["/nonexistent", "7", "[1]", "'\x01'", "{a: 1}"])),
            text + f"{key}: " + rng.choice(["[]", "{}", "7", "[[1]]", "{1: 2}", "null", "!!binary aGVsbG8="]) + "\n",
            b"\xff\xfe\x00" + text.encode(),  # not UTF-8
            mutate_bytes(text.encode(), rng),
        ])
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    return path


# ------------------------------------------------------------------------------------------------ the case


def _dataset_case(seed: int, fmt: str, tmp: Path, images: dict[str, bytes], models) -> str:
    rng = random.Random(seed)
    root = tmp / f"{fmt}_{seed}"
    if root.exists():
        shutil.rmtree(root)
    desc = _write_case(root, fmt, rng, images)

    # 1. the reader
    ds, outcome = None, "clean"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = build_dataset(desc, "train")
        except DatasetError as err:
            msg = one_line(str(err), "reader")
            named = msg.split(": ", 1)[0]  # "<file>[ where]: what is wrong"
            assert str(root) in named or "/" in named, f"reader error names no file: {msg!r}"
            outcome = "error"
    warned = [w for w in caught if issubclass(w.category, DatasetWarning)]
    others = [w for w in caught if not issubclass(w.category, (DatasetWarning, DeprecationWarning))]
    assert not others, f"unexpected warning {others[0].category.__name__}: {others[0].message}"
    if ds is not None:
        assert bool(warned) == bool(ds.skipped), f"warned {len(warned)} times but counted {len(ds.skipped)} problems"
        for w in warned:
            one_line(str(w.message), "reader warning")
        outcome = "skipped" if ds.skipped else "clean"

    # strict mode: the first problem as one line, or nothing to say
    if rng.random() < 0.25:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            try:
                strict = build_dataset(desc, "train", strict=True)
                assert ds is not None and not ds.skipped, "strict mode accepted what the default mode skipped"
                assert len(strict) == len(ds)
            except DatasetError as err:
                one_line(str(err), "strict reader")
                assert ds is None or ds.skipped, f"strict mode refused a clean dataset: {err}"

    # 2. the doctor
    try:
        (report,) = check_dataset(desc, splits=["train"])
    except DatasetError as err:  # an unusable descriptor: `cspdet check` prints this one line (exit 1)
        assert ds is None, f"the doctor refused what the reader accepted: {err}"
        one_line(str(err), "doctor")
        return outcome
    text = format_report([report])
    if ds is None:
        assert report.fatal, "the reader refused the split but the doctor found it fine"
    else:
        assert report.fatal is None, f"the doctor refused what the reader accepted: {report.fatal}"
        missing = set(ds.skipped.counts) - set(report.counts)
        assert not missing, f"the doctor does not name the reader's {missing}:\n{text}"
    assert text.endswith(("CLEAN", "problem(s) found"))

    # 3. one training step
    if ds is not None:
        # 64 px: at 32 the stride-32 level is 1x1, and BatchNorm cannot train on one value per channel when a
        # batch holds a single image (known limit of img_size 32, not an input problem)
        aug = {"img_size": [64, 64], "mosaic_prob": rng.choice([0.0, 1.0]), "mixup_prob": rng.choice([0.0, 1.0]),
               "mosaic_pool": 0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            try:
                batch = next(iter(build_train_loader(ds, aug, batch_size=2, seed=seed, workers=0)))
            except DatasetError as err:  # e.g. every image undecodable: one line
                one_line(str(err), "train loader")
                return "error"
        model = models(ds.num_classes)
        out = model(batch["images"].float(), batch["targets"])
        assert torch.isfinite(out["loss"]), f"non-finite loss {out['loss']}"
        out["loss"].backward()
        model.zero_grad(set_to_none=True)
    return outcome


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_fuzz_dataset_readers_doctor_and_training(fmt, image_bytes, models, tmp_path, request):
    run_family(f"dataset:{fmt}", f"'tests/data/test_fuzz_inputs.py::test_fuzz_dataset_readers_doctor_and_training"
               f"[{fmt}]'", cases(f"dataset:{fmt}", 1 / 3),
               lambda seed: _dataset_case(seed, fmt, tmp_path, image_bytes, models), request)
