"""Image reading: grayscale, RGBA, 16-bit and EXIF-rotated files become (H, W, 3) uint8 RGB."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from cspdet.data import ImageReadError, build_dataset, read_image
from cspdet.data.image_io import image_size


def test_grayscale_rgba_16bit(tmp_path):
    gray = np.tile(np.arange(0, 200, 4, dtype=np.uint8), (30, 1))  # (30, 50)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 2] = 200  # red in BGR order
    bgra[..., 3] = 10  # nearly transparent: alpha is dropped, colour kept
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (20, 30, 3) and out[0, 0].tolist() == [200, 0, 0]  # RGB

    deep = np.full((10, 12), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3) and out[0, 0, 0] == 40000 >> 8


def test_exif_orientation_and_boxes_stay_aligned(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 deg clockwise to display), labelled in the
    displayed orientation: the box must cover the red object after reading."""
    raw = np.full((40, 60, 3), 30, np.uint8)
    raw[0:10, 0:20] = (255, 0, 0)  # red block at the stored top-left
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    im.save(tmp_path / "images" / "1.jpg", exif=exif, quality=95)
    assert image_size(tmp_path / "images" / "1.jpg") == (60, 40)
    # displayed (60 x 40, H x W): the block is now at the top-right, x in [30, 40), y in [0, 20)
    data = {"images": [{"id": 1, "file_name": "1.jpg", "height": 60, "width": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 0, 10, 20], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "red"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = build_dataset({"format": "coco", "path": str(tmp_path), "train": {"images": "images", "annotations": "a.json"}}, "train")
    s = ds.load_sample(0)
    assert s.image.shape == (60, 40, 3) and not ds.skipped
    x1, y1, x2, y2 = s.boxes[0].astype(int)
    inside = s.image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
    assert inside[..., 0].min() > 200 and inside[..., 1].max() < 60


@pytest.mark.parametrize(
    "content,kind,text",
    [(None, "missing_image", "not found"), (b"", "unreadable_image", "empty file"),
     (b"GIF89a-but-not-really", "unreadable_image", "cannot decode"),
     ("half", "truncated_image", "truncated JPEG")],
)
def test_read_errors_are_precise(tmp_path, content, kind, text):
    path = tmp_path / "x.jpg"
    if content == "half":
        cv2.imwrite(str(path), np.zeros((32, 32, 3), np.uint8))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert err.value.kind == kind and text in str(err.value) and str(path) in str(err.value)


def _odd_images(root):
    """Files of every odd kind with a bright object at a known displayed box (x1, y1, x2, y2); the EXIF
    JPEG is large enough (200 x 120 displayed) that the training loader decodes it at reduced size."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    gray = np.full((48, 64), 30, np.uint8)
    gray[8:24, 16:40] = 255
    cv2.imwrite(str(root / "gray.png"), gray)
    files["gray.png"] = ((48, 64), (16, 8, 40, 24))
    bgra = np.zeros((48, 64, 4), np.uint8)
    bgra[..., :3] = 30
    bgra[20:40, 8:28] = (0, 0, 255, 0)  # red in BGR, fully transparent: the colour must survive
    cv2.imwrite(str(root / "rgba.png"), bgra)
    files["rgba.png"] = ((48, 64), (8, 20, 28, 40))
    deep = np.full((40, 56, 3), 30 * 257, np.uint16)
    deep[4:20, 30:50] = (0, 0, 65535)
    cv2.imwrite(str(root / "deep.png"), deep)
    files["deep.png"] = ((40, 56), (30, 4, 50, 20))
    raw = np.full((120, 200, 3), 30, np.uint8)
    raw[0:40, 0:80] = (255, 0, 0)  # stored top-left; orientation 6 displays it top-right
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / "exif.jpg", exif=exif, quality=95)
    files["exif.jpg"] = ((200, 120), (80, 0, 120, 80))
    return files


def test_odd_images_stay_aligned_through_dataset_and_training_decode(tmp_path):
    """Grayscale, RGBA, 16-bit and EXIF-rotated files: 3-channel uint8 RGB, and the box still covers the
    object both in load_sample and in the training loader's fitted (possibly reduced-size JPEG) decode."""
    from cspdet.data import AugmentConfig, TrainDataset

    files = _odd_images(tmp_path / "images")
    images, anns = [], []
    for k, (name, ((h, w), (x1, y1, x2, y2))) in enumerate(files.items(), 1):
        images.append({"id": k, "file_name": name, "height": h, "width": w})
        anns.append({"id": k, "image_id": k, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                 "categories": [{"id": 1, "name": "obj"}]}))  # fmt: skip
    ds = build_dataset({"format": "coco", "path": str(tmp_path), "train": {"images": "images", "annotations": "a.json"}}, "train")
    train = TrainDataset(ds, AugmentConfig(img_size=(48, 48)))

    def check(image, box, what):
        x1, y1, x2, y2 = np.round(box).astype(int)
        bright = image[..., :3].max(axis=2).astype(int)  # the object is bright in some channel, the rest 30
        assert bright[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 180, what
        ring = np.ones(bright.shape, bool)
        ring[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2] = False
        assert bright[ring].max() < 80, what

    for i, name in enumerate(files):
        s = ds.load_sample(i)
        assert s.image.dtype == np.uint8 and s.image.shape == (*files[name][0], 3), name
        check(s.image, s.boxes[0], f"{name} load_sample")
        fitted, boxes, _, orig = train._decode_fitted(i)
        assert orig == files[name][0] and max(fitted.shape[:2]) == 48, name
        check(fitted, boxes[0], f"{name} fitted for mosaic")
    assert not ds.skipped  # sizes agree with the displayed orientation: nothing clipped or reported


def test_valid_jpegs_with_trailing_bytes_or_exif_thumbnail_are_not_truncated(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    plain = encoded.tobytes()
    # a phone "motion photo" / camera trailer: more than 64 bytes after the end-of-image marker
    (tmp_path / "trailer.jpg").write_bytes(plain + b"\x00" * 100 + b"ftypmp42" * 20)
    assert read_image(tmp_path / "trailer.jpg").shape == (48, 64, 3)
    # an EXIF thumbnail carries its own end-of-image marker early in the file: a truncated main image with
    # such a thumbnail must still be reported as truncated
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = 1
    pil.save(tmp_path / "thumb.jpg", exif=exif, quality=90)
    data = (tmp_path / "thumb.jpg").read_bytes()
    fake_thumb = b"\xff\xe1\x00\x0aEXIF\xff\xd9\x00\x00"  # APP1 segment containing an FFD9
    (tmp_path / "cut.jpg").write_bytes(data[:2] + fake_thumb + data[2 : len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
