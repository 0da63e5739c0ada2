import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cspdet.models import csp_darknet53, csp_resnet50
from cspdet.models.detector import DETECTOR_NAMES, Detector, create_detector
from cspdet.models.info import count_flops, count_parameters, model_info

# YOLOX's published parameter counts for 80 classes (yolox/exp get_model + sum of numel).
YOLOX_PARAMS = {
    "nano": 912_159,
    "tiny": 5_055_855,
    "s": 8_968_255,
    "m": 25_326_495,
    "l": 54_208_895,
    "x": 99_071_455,
}


@pytest.mark.parametrize("size", list(YOLOX_PARAMS))
def test_cspdarknet_presets_equal_yolox_and_output_shapes(size):
    det = create_detector(f"cspdarknet_{size}").eval()
    assert count_parameters(det) == YOLOX_PARAMS[size]
    assert det.num_classes == 80 and det.strides == (8, 16, 32)
    with torch.no_grad():
        out = det(torch.rand(1, 3, 64, 96) * 255)
    assert out.shape == (1, 8 * 12 + 4 * 6 + 2 * 3, 85)


def test_flops_at_640_match_yolox_s():
    det = create_detector("cspdarknet_s")
    gflops = count_flops(det, 640) / 1e9
    assert gflops == pytest.approx(26.8, rel=0.01)  # YOLOX table: 26.8 G (2 x MACs)
    info = model_info(create_detector("cspdarknet_nano"), 416)
    assert info["params"] == YOLOX_PARAMS["nano"] and info["gflops"] == pytest.approx(1.08, rel=0.05)


@pytest.mark.parametrize("name,preset", [("cspresnet50", csp_resnet50), ("cspdarknet53", csp_darknet53)])
def test_timm_backbones(name, preset):
    det = create_detector(name, num_classes=3).eval()
    # The backbone is the timm-exact preset (minus its classifier), so timm weights load into it.
    assert count_parameters(det.backbone) == count_parameters(preset(features_only=True, num_classes=0))
    assert det.backbone.out_channels == [256, 512, 1024]
    with torch.no_grad():
        out = det(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, 84, 8)


def test_custom_stage_defs_from_config_data():
    det = create_detector(
        "custom", num_classes=2, stem_channels=16, width=0.5, act="relu",
        stage_defs=[[1, 32, "darknet", True], [1, 64, "resnet", True], [1, 64, "darknet", True],
                    [1, 128, "resnext", True]],
    ).eval()
    assert det.backbone.out_strides == [8, 16, 32]
    assert det.neck.out_channels == [32, 32, 64]
    assert det(torch.zeros(2, 3, 64, 64)).shape == (2, 84, 7)


def test_bad_names_and_overrides_are_clear():
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("yolov9")
    with pytest.raises(ValueError, match="custom"):
        create_detector("cspdarknet_s", stage_defs=[[1, 32, "darknet", True]])
    with pytest.raises(ValueError, match="unknown block"):
        create_detector("custom", stage_defs=[[1, 32, "vit", True]] * 4)
    with pytest.raises(ValueError, match="strides"):
        create_detector("custom", stage_defs=[[1, 32, "darknet", True]] * 3)
    with pytest.raises(ValueError, match="activation"):
        create_detector("cspdarknet_nano", act="gelu2")
    assert "cspdarknet_nano" in DETECTOR_NAMES and "cspresnet50" in DETECTOR_NAMES


def _small() -> Detector:
    torch.manual_seed(0)
    return create_detector("cspdarknet_s", num_classes=80, width=0.125)


def test_train_and_eval_api():
    det = _small().train()
    images = torch.rand(2, 3, 64, 64) * 255
    targets = torch.tensor([[[3.0, 5, 5, 40, 50], [0, 0, 0, 0, 0]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
    mask = torch.tensor([[True, False], [False, False]])
    losses = det(images, targets, mask)
    assert set(losses) == {"loss", "iou_loss", "obj_loss", "cls_loss", "l1_loss", "num_fg"}
    assert losses["loss"].dim() == 0 and losses["num_fg"] >= 1
    losses["loss"].backward()
    assert det.backbone.stem.conv.conv.weight.grad is not None
    # A batch without any box (M = 0) still trains the objectness branch.
    empty = det(images, torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.bool))
    assert torch.isfinite(empty["loss"]) and empty["num_fg"] == 0
    with pytest.raises(ValueError, match="needs targets"):
        det(images)
    with pytest.raises(ValueError, match="multiples of 32"):
        det(torch.zeros(1, 3, 48, 64), targets[:1], mask[:1])
    with pytest.raises(ValueError, match="\\(B, 3, H, W\\)"):
        det(torch.zeros(3, 64, 64))
    # predict() runs in eval mode and restores the caller's mode.
    results = det.predict(images, conf=0.0, max_det=7)
    assert det.training and len(results) == 2 and all(len(r["scores"]) == 7 for r in results)


def _real_batch(root: Path, size: int, n: int):
    """Letterboxed (top-left, pad 114) RGB images and padded targets from the coco128 val annotations."""
    ann = json.loads((root / "annotations" / "instances_val.json").read_text())
    cat_index = {c["id"]: i for i, c in enumerate(sorted(ann["categories"], key=lambda c: c["id"]))}
    images, boxes = [], []
    for info in ann["images"]:
        path = root / "images" / "val" / info["file_name"]
        anns = [a for a in ann["annotations"] if a["image_id"] == info["id"] and not a.get("iscrowd", 0)]
        if not path.is_file() or not anns:
            continue
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        r = min(size / img.shape[0], size / img.shape[1])
        resized = cv2.resize(img, (round(img.shape[1] * r), round(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((size, size, 3), 114, np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        images.append(torch.from_numpy(canvas).permute(2, 0, 1).float())
        b = torch.tensor([[cat_index[a["category_id"]], *a["bbox"]] for a in anns], dtype=torch.float32)
        b[:, 1:] *= r
        b[:, 3:] += b[:, 1:3]  # xywh -> xyxy
        boxes.append(b[(b[:, 3] - b[:, 1] > 2) & (b[:, 4] - b[:, 2] > 2)])
        if len(images) == n:
            break
    if not images:
        pytest.skip(f"no annotated images found under {root / 'images' / 'val'}")
    m = max(len(b) for b in boxes)
    targets = torch.zeros(len(images), m, 5)
    mask = torch.zeros(len(images), m, dtype=torch.bool)
    for i, b in enumerate(boxes):
        targets[i, : len(b)], mask[i, : len(b)] = b, True
    return torch.stack(images), targets, mask


def test_predict_on_a_real_image(coco128_root):
    images, _, _ = _real_batch(coco128_root, 128, 1)
    det = _small()
    (res,) = det.predict(images, conf=0.0, iou=0.5, max_det=50)
    assert res["boxes"].shape == (50, 4) and res["boxes"].dtype == torch.float32
    assert res["labels"].dtype == torch.int64 and ((res["labels"] >= 0) & (res["labels"] < 80)).all()
    assert torch.isfinite(res["boxes"]).all() and (res["boxes"][:, 2:] >= res["boxes"][:, :2]).all()
    assert (res["scores"][:-1] >= res["scores"][1:]).all()


def test_loss_decreases_when_overfitting_a_real_batch(coco128_root):
    images, targets, mask = _real_batch(coco128_root, 128, 2)
    det = _small().train()
    opt = torch.optim.AdamW(det.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for _ in range(40):
        losses = det(images, targets, mask)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(losses["loss"].item())
    assert all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.6 * history[0], history
