"""Inference on images and videos: the object behind ``cspdet predict`` and the Python API.

    >>> from cspdet import Predictor
    >>> predictor = Predictor.from_checkpoint("runs/train/exp/best.pt")
    >>> results = predictor(["bus.jpg", "zidane.jpg"])      # or one path, or an (H, W, 3) RGB array
    >>> r = results[0]
    >>> r.boxes, r.scores, r.labels, r.names                # (K, 4) xyxy original px, (K,), (K,), K names
    >>> cv2.imwrite("out.jpg", r.plot(bgr=True))

One image's path: read (RGB uint8) -> letterbox into ``img_size`` (keep ratio, pad 114 bottom/right; with
``rect`` only up to the next multiple of the stride, so a 4:3 photo runs at 480x640, not 640x640) ->
float (1, 3, H, W) 0..255 -> ``Detector.predict`` (score filter, class-aware NMS) -> boxes / ratio, clipped
to the original image -> :class:`Results`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch

from ..config import field_range
from ..data.image_io import IMAGE_SUFFIXES, ImageReadError, read_image
from ..data.letterbox import Letterbox
from ..data.visualize import draw_boxes
from .callbacks import CallbackList
from .contracts import InferenceModel
from .device import select_device
from .open import open_model

__all__ = ["ImageLike", "Predictor", "Results", "VIDEO_SUFFIXES", "expand_source", "is_video"]

logger = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, np.ndarray]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def expand_source(source: str | os.PathLike) -> list[Path]:
    """Files named by ``source``: a file (any suffix: it is read and reported if it is not an image), a
    folder (its images and videos, sorted, not recursive) or a glob pattern (sorted matches).

    Raises:
        FileNotFoundError: nothing exists at ``source`` and it matches no file.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if path.exists() or not glob.has_magic(text):
        return [path]  # a missing plain path is kept: reading it gives the one-line "not found" error
    matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    if not matches:
        raise FileNotFoundError(f"{text}: no files match this pattern")
    return matches


@dataclass
class Results:
    """Detections on one image, in that image's original pixel coordinates.

    Attributes:
        image: (H, W, 3) uint8 RGB, the original image.
        boxes: (K, 4) float32 xyxy px, clipped to the image.
        scores: (K,) float32 (objectness x class probability), decreasing.
        labels: (K,) int64 contiguous class indices into ``class_names``.
        class_names: the model's class names (all of them).
        path: the file the image came from (None for an array).
        category_ids: contiguous index -> dataset category id (e.g. COCO ids), when known.
        speed_ms: wall time of preprocessing + model + NMS for this image.
    """

    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    path: str | None = None
    category_ids: list[int] | None = None
    speed_ms: float = 0.0
    frame: int | None = field(default=None)
    """Frame index when the image is a video frame."""

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def names(self) -> list[str]:
        """Class name of each detection, (K,)."""
        return [self.class_names[int(i)] for i in self.labels]

    @property
    def orig_size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def summary(self) -> str:
        """Counts per class, most frequent first, e.g. ``"4 person, 1 bus"`` (``"no detections"``)."""
        if not len(self):
            return "no detections"
        counts: dict[str, int] = {}
        for name in self.names:
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def plot(self, bgr: bool = False, line_width: int | None = None, show_scores: bool = True) -> np.ndarray:
        """A copy of the image with boxes, class names and scores drawn.

        Args:
            bgr: return BGR (for ``cv2.imwrite`` / ``cv2.imshow``) instead of RGB.
            line_width: box line width in px (default: scales with the image size).
            show_scores: write each score after its class name.

        Returns:
            (H, W, 3) uint8, RGB unless ``bgr``.
        """
        canvas = draw_boxes(self.image, self.boxes, self.labels, self.class_names,
                            scores=self.scores if show_scores else None, line_width=line_width)
        return cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR) if bgr else canvas

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`plot` to ``path`` (format from the suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), self.plot(bgr=True)):
            raise OSError(f"{path}: OpenCV could not write the image (unsupported suffix or unwritable folder)")
        return path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: image info and one entry per detection with xyxy box (original px), score,
        class id (contiguous), class name and, when known, the dataset category id."""
        h, w = self.orig_size
        dets = []
        for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            d = {"box": [round(v, 2) for v in box], "score": round(score, 5), "class_id": int(label),
                 "class_name": self.class_names[label]}
            if self.category_ids is not None:
                d["category_id"] = int(self.category_ids[label])
            dets.append(d)
        out: dict[str, Any] = {"image": self.path, "width": w, "height": h}
        if self.frame is not None:
            out["frame"] = self.frame
        out["speed_ms"] = round(self.speed_ms, 2)
        out["detections"] = dets
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text, one detection per line (readable and diff-friendly)."""
        d = self.to_dict()
        dets = d.pop("detections")
        head = json.dumps(d)[:-1]
        if not dets:
            return head + ', "detections": []}\n'
        return head + ', "detections": [\n  ' + ",\n  ".join(json.dumps(x) for x in dets) + "\n]}\n"

    def to_txt(self, with_conf: bool = False) -> str:
        """YOLO label format: one ``class cx cy w h`` line per detection (normalised to 0..1), optionally
        followed by the score. Empty string when there are no detections."""
        h, w = self.orig_size
        lines = []
        for (x1, y1, x2, y2), score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            vals = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
            line = f"{label} " + " ".join(f"{v:.6f}" for v in vals)
            lines.append(line + (f" {score:.5f}" if with_conf else ""))
        return "\n".join(lines) + ("\n" if lines else "")


def _declared_frame_count(cap: cv2.VideoCapture) -> int | None:
    """The frame count a video's container declares, or None when it declares none (streams, some codecs)."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and np.isfinite(n) and 0 < n < 2**31 else None


def _as_hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (int(img_size), int(img_size)) if isinstance(img_size, (int, np.integer)) else tuple(int(v) for v in img_size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ValueError(f"img_size must be an int or (height, width), got {img_size!r}")
    return hw  # type: ignore[return-value]


class Predictor:
    """Run a detector on images: letterbox, predict, map boxes back to the original images.

    Args:
        model: an :class:`~cspdet.runtime.contracts.InferenceModel` (a ``cspdet.models.Detector``, or what
            :func:`cspdet.runtime.open_model` returns). It is used in eval mode, on the device it is on.
        class_names: one name per class (length ``model.num_classes``).
        img_size: letterbox size, an int or (height, width), multiples of the model's largest stride (32).
        conf: score threshold; iou: NMS IoU threshold; max_det: detections kept per image.
        classes: keep only these class indices (None = all); agnostic: class-agnostic NMS.
        category_ids: contiguous class index -> dataset category id (reported in json when given).
        batch_size: images per forward pass when called with a list.
        nms_free: for a model with a one-to-one branch (the ``csptal_*`` presets): True = its top-k with no NMS,
            False = NMS on the one-to-many branch; None = the model's default (NMS-free when it can).
        rect: pad each batch only to the next multiple of the stride of its largest resized image instead of to
            the full ``img_size`` (the minimal letterbox of Ultralytics' predict; same scale r, fewer pixels: a
            640x480 photo costs 3/4 of the compute). Models with a fixed input size (static exports) always get
            ``img_size``; ``rect=False`` gives every image exactly ``img_size`` (what the evaluator uses).
        callbacks: objects with an ``on_predict_batch_end(predictor, results)`` hook, called after every forward
            pass with that batch's :class:`Results` (:mod:`cspdet.runtime.callbacks`); ``predictor.callbacks``
            may be extended later.
    """

    def __init__(
        self,
        model: InferenceModel,
        class_names: Sequence[str],
        img_size: int | Sequence[int] = 640,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        category_ids: Sequence[int] | None = None,
        batch_size: int = 8,
        nms_free: bool | None = None,
        rect: bool = True,
        callbacks: Iterable[Any] | None = None,
    ):
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"Predictor: model has {num_classes} classes but {len(class_names)} class names "
                             "were given")
        self.model = model.eval()
        if nms_free is not None:
            model.nms_free = nms_free
        self.class_names = [str(n) for n in class_names]
        self.img_size = _as_hw(img_size)
        self.letterbox = Letterbox(self.img_size)
        self.stride = stride = max(getattr(model, "strides", (32,)))
        if self.img_size[0] % stride or self.img_size[1] % stride:
            raise ValueError(f"img_size {self.img_size} must be a multiple of the model stride {stride} "
                             f"(e.g. {[max(stride, round(s / stride) * stride) for s in self.img_size]})")
        if hasattr(model, "check_input_size"):  # an exported file with a fixed input size
            model.check_input_size(self.img_size)
        self.rect = bool(rect) and getattr(model, "fixed_input_size", None) is None
        for key, value in (("conf", conf), ("iou", iou), ("max_det", max_det)):  # the ranges of eval.conf, ...
            if value not in field_range(f"eval.{key}"):
                raise ValueError(f"Predictor: {key} {value!r} out of range {field_range(f'eval.{key}')}")
        self.conf, self.iou, self.max_det, self.agnostic = float(conf), float(iou), int(max_det), bool(agnostic)
        self.classes = self.resolve_classes(classes) if classes is not None else None
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.batch_size = max(1, int(batch_size))
        self.device = next(model.parameters()).device
        self.callbacks = CallbackList.of(callbacks)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", fuse: bool = True, **kwargs: Any
    ) -> Predictor:
        """Load a cspdet detector checkpoint (``best.pt`` / ``last.pt`` of a training run, a converted one) or an
        exported file (``.onnx`` on ONNX Runtime, OpenVINO ``.xml``, ``.torchscript``; see :mod:`cspdet.export`),
        which gives the same :class:`Results`.

        Everything comes from the checkpoint's spec and metadata (no config file): class names, category ids,
        and the defaults of ``img_size``, ``conf``, ``iou`` and ``max_det``; keyword arguments override them and
        go to :class:`Predictor`. ``device``: ``"auto"`` (a GPU when there is one, as in training and evaluation),
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``. ``fuse`` folds BatchNorm into the convolutions
        (faster, same outputs in eval). ``precision="auto"`` (bf16 on CPUs with native bf16, else fp32) / ``"bf16"``
        and ``channels_last=True`` select the PyTorch CPU fast path (:mod:`cspdet.runtime.cpu`; bf16 moves scores by
        ~1e-2).

        Raises:
            CheckpointError: not a cspdet detector checkpoint, or weights that do not fit the stored model.
            DeviceError: a CUDA device asked for on a machine without one (a ``RuntimeError``).
        """
        if isinstance(device, str):
            device = select_device(device)  # "auto": a GPU when there is one, as training and evaluation
        fast = {k: kwargs.pop(k) for k in ("precision", "channels_last") if k in kwargs}
        model = open_model(path, device=device, fuse=fuse, **fast)
        meta = model.meta
        for key in ("img_size", "conf", "iou", "max_det", "category_ids"):
            if kwargs.get(key) is None:
                kwargs[key] = getattr(meta, key)
        return cls(model, meta.class_names, **kwargs)

    def resolve_classes(self, classes: Sequence[int | str]) -> list[int]:
        """Class indices from indices or names (``["person", 5]``); unknown ones raise ``ValueError``."""
        out = []
        lower = {n.lower(): i for i, n in enumerate(self.class_names)}
        for c in classes:
            if isinstance(c, str) and c.strip().lstrip("-").isdigit():
                c = int(c)
            if isinstance(c, str):
                if c.lower() not in lower:
                    raise ValueError(f"unknown class {c!r}; the model's classes are: {', '.join(self.class_names)}")
                out.append(lower[c.lower()])
            else:
                if not 0 <= int(c) < len(self.class_names):
                    raise ValueError(f"class index {c} out of range: the model has {len(self.class_names)} classes "
                                     f"(0..{len(self.class_names) - 1})")
                out.append(int(c))
        return out

    def warmup(self) -> None:
        """One forward pass on a blank image, so that one-off setup (allocator, kernel selection) does not
        land in the first image's timing."""
        self._predict([np.full((*self.img_size, 3), 114, np.uint8)])

    # ------------------------------------------------------------------------------------------ input

    @staticmethod
    def load(source: ImageLike) -> tuple[np.ndarray, str | None]:
        """An image as (H, W, 3) uint8 RGB and its path.

        Arrays are taken as RGB (cspdet's convention; convert OpenCV's BGR first): (H, W) gray and (H, W, 4)
        RGBA are accepted; float arrays must hold 0..255 values.

        Raises:
            ImageReadError: missing, empty, non-image or truncated file (one-line message naming it).
            ValueError: an array of the wrong shape.
        """
        if isinstance(source, np.ndarray):
            image = source
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) == 0:
                raise ValueError(f"image array must be (H, W, 3) RGB, got shape {source.shape}")
            image = image[:, :, :3]
            if image.dtype != np.uint8:
                image = np.clip(image, 0, 255).astype(np.uint8)
            return np.ascontiguousarray(image), None
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"expected an image path or an (H, W, 3) array, got {type(source).__name__}")
        if is_video(source) and Path(source).is_file():  # a missing one gets read_image's "not found"
            raise ImageReadError(source, "unreadable_image", "is a video; use Predictor.predict_video")
        return read_image(source), os.fspath(source)

    # -------------------------------------------------------------------------------------- inference

    def __call__(self, source: ImageLike | Sequence[ImageLike]) -> list[Results]:
        """Detections for one image or several.

        Args:
            source: a path, a folder, a glob pattern, an (H, W, 3) RGB array, or a list of paths / arrays.
                Videos in a folder or glob are skipped (use :meth:`predict_video`); a video named directly
                raises ``ImageReadError``.

        Returns:
            one :class:`Results` per image, in input order.

        Raises:
            ImageReadError: an image that cannot be read (the CLI catches this per item and goes on).
        """
        if isinstance(source, (str, os.PathLike)):
            items: list[ImageLike] = expand_source(source)
            named = Path(source).is_file() or not (Path(source).is_dir() or glob.has_magic(os.fspath(source)))
            if not named:  # a file named directly is kept: load() says why a video (or a missing file) fails
                items = [p for p in items if not is_video(p)]
        elif isinstance(source, np.ndarray):
            items = [source]
        else:
            items = list(source)
        results: list[Results] = []
        for start in range(0, len(items), self.batch_size):
            loaded = [self.load(s) for s in items[start:start + self.batch_size]]
            results += self.predict_images([im for im, _ in loaded], [p for _, p in loaded])
        return results

    def predict_images(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Results]:
        """Detections for a batch of (H, W, 3) uint8 RGB images (any sizes; all letterboxed to ``img_size``), in one
        forward pass; then ``on_predict_batch_end``."""
        results = self._predict(images, paths)
        if results:
            self.callbacks.fire("on_predict_batch_end", self, results)
        return results

    @torch.inference_mode()
    def _predict(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Results]:
        if not images:
            return []
        paths = list(paths) if paths is not None else [None] * len(images)
        tic = time.perf_counter()
        batch, ratios = self.preprocess(images)
        dets = self.model.predict(batch, conf=self.conf, iou=self.iou, max_det=self.max_det, classes=self.classes,
                                  agnostic=self.agnostic)
        out = []
        for image, path, r, det in zip(images, paths, ratios, dets):
            boxes = Letterbox.invert(det["boxes"].float().cpu().numpy(), r, image.shape[:2])
            out.append(Results(image=image, boxes=boxes.astype(np.float32),
                               scores=det["scores"].float().cpu().numpy(),
                               labels=det["labels"].cpu().numpy().astype(np.int64), class_names=self.class_names,
                               path=path, category_ids=self.category_ids))
        ms = 1000 * (time.perf_counter() - tic) / len(images)
        for r in out:
            r.speed_ms = ms
        return out

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[float]]:
        """B (H_i, W_i, 3) uint8 RGB images -> ((B, 3, H, W) float32 RGB 0..255 on the model's device, B ratios r).

        Each image is resized by r = min(img_size / its size) and put top-left on a 114 background of (H, W) =
        ``img_size`` (or, with ``rect``, the smallest multiple of the stride that holds the batch's resized images).
        The float NCHW batch is filled in one pass from the uint8 images (no uint8 NHWC batch, no permuted copy).
        """
        resized = [self.letterbox.resize(image) for image in images]
        h, w = self.img_size
        if self.rect:
            s = self.stride
            h = min(h, max(-(-im.shape[0] // s) * s for im, _ in resized))
            w = min(w, max(-(-im.shape[1] // s) * s for im, _ in resized))
        batch = np.full((len(resized), 3, h, w), self.letterbox.pad_value, dtype=np.float32)
        for i, (im, _) in enumerate(resized):
            batch[i, :, :im.shape[0], :im.shape[1]] = im.transpose(2, 0, 1)
        return torch.from_numpy(batch).to(self.device), [float(r) for _, r in resized]

    def predict_video(self, path: str | os.PathLike, strict: bool = False) -> Iterator[Results]:
        """Detections frame by frame (``Results.frame`` = index, ``Results.image`` = the RGB frame), computed
        ``batch_size`` frames per forward pass (set ``batch_size = 1`` for the lowest latency per frame).

        After the last frame, the number of frames decoded is compared with the frame count the container
        declares (``CAP_PROP_FRAME_COUNT``, when it declares one): a truncated or damaged file stops early.
        A difference is logged as a warning naming both counts, or raised with ``strict``.

        Raises:
            ImageReadError: OpenCV cannot open the file or it has no decodable frame; with ``strict``, also
                (kind ``truncated_image``) when the frame counts differ.
        """
        if not Path(path).is_file():
            raise ImageReadError(path, "missing_image", "video file not found")
        cap = cv2.VideoCapture(os.fspath(path))
        try:
            if not cap.isOpened():
                raise ImageReadError(path, "unreadable_image", "OpenCV cannot open it as a video")
            declared = _declared_frame_count(cap)
            index = 0
            ok = True
            while ok:  # frames in batches of ``batch_size``: one forward pass per batch, results in frame order
                frames = []
                while len(frames) < self.batch_size:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                batch = self._predict(frames, [os.fspath(path)] * len(frames))
                for res in batch:
                    res.frame = index
                    index += 1
                if batch:  # the hook sees the frame indices
                    self.callbacks.fire("on_predict_batch_end", self, batch)
                yield from batch
            if index == 0:
                raise ImageReadError(path, "unreadable_image", "no decodable video frame")
            if declared is not None and index != declared:
                reason = (f"decoded {index} of the {declared} frames its container declares; the video is truncated "
                          "or damaged")
                if strict:
                    raise ImageReadError(path, "truncated_image", reason)
                logger.warning("%s: %s", os.fspath(path), reason)
        finally:
            cap.release()

    @staticmethod
    def video_fps(path: str | os.PathLike, default: float = 25.0) -> float:
        cap = cv2.VideoCapture(os.fspath(path))
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
        finally:
            cap.release()
        return float(fps) if fps and fps > 0 and np.isfinite(fps) else default
