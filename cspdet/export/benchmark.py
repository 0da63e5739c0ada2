"""Benchmark a checkpoint across formats and backends on the machine it runs on (``tools/benchmark.py``).

For each format: file size; COCO mAP50-95 and mAP50 on the config's val split (pycocotools, the evaluator's
settings); end-to-end latency per image at batch 1 (read + decode the file, letterbox, forward, post-process,
map boxes back: ``Predictor`` on one path, its default rect letterbox where the file takes any size), median and
p90; throughput at batch 8 (images / s through the same ``Predictor`` with ``batch_size=8``). ONNX and TorchScript
exports are dynamic, OpenVINO ones static at the eval size (see :class:`BenchFormat`).

    rows = benchmark("best.pt", "configs/small_scratch.yaml", formats=["pytorch", "onnx", "openvino"])
    print(format_table(rows)); write_csv(rows, "bench.csv")
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..config import Config, ConfigError
from ..config.data_yaml import config_for_data, is_dataset_yaml
from ..engine.evaluator import COCOEvaluator
from ..fileio import atomic_write
from ..runtime.cpu import native_bf16
from ..runtime.errors import ExportError
from ..runtime.formats import LiveMapping, deploy_formats, get_format
from ..runtime.open import load_backend, open_model
from ..runtime.predictor import Predictor
from ..runtime.weights import checkpoint_meta, read_weights, recorded_dataset
from .exporters import export_model, export_suffix

__all__ = ["BENCH_FORMATS", "BenchFormat", "BenchRow", "benchmark", "default_formats", "format_table", "write_csv"]


class BenchFormat(NamedTuple):
    """How a benchmark format is made and run: the export format (None: the checkpoint itself), int8
    quantisation, the precision it runs in (``bf16`` rows only mean something on CPUs with native bf16),
    channels_last (PyTorch only) and dynamic shapes.

    ONNX Runtime and TorchScript files are exported dynamic: one file serves batch 1 and 8, and the predictor's rect
    letterbox (a 640x480 photo runs at 480x640) at full speed. OpenVINO files are exported static, at the
    benchmark size and batch 1 (``cspdet export``'s default; a batch of 8 runs as 8 calls): OpenVINO runs static
    shapes faster than dynamic ones and a dynamic model pays a compilation the first time it meets each input
    shape, which a folder of mixed photos under rect letterboxing keeps doing (``benchmarks/results/measurements.md``).
    """

    export: str | None
    int8: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    dynamic: bool = True


class _BenchFormats(LiveMapping):
    """A live view ``{row name: BenchFormat}``: the two PyTorch rows, then every deploy format's rows
    (:attr:`cspdet.runtime.formats.DeployFormat.bench`) in table order, the rows that are not measured by default
    last."""

    def __init__(self) -> None:
        super().__init__(self._table)

    def _table(self) -> dict[str, BenchFormat]:
        rows = {"pytorch": (BenchFormat(None), True),
                "pytorch_bf16": (BenchFormat(None, precision="bf16", channels_last=True), True)}
        for fmt in deploy_formats():
            for v in fmt.bench:
                dynamic = fmt.bench_dynamic if v.dynamic is None else v.dynamic
                rows[v.name] = (BenchFormat(fmt.name, v.int8, v.precision, False, dynamic), v.default)
        return {k: f for k, (f, d) in rows.items() if d} | {k: f for k, (f, d) in rows.items() if not d}

    def default_names(self) -> list[str]:
        rows = {v.name for fmt in deploy_formats() for v in fmt.bench if not v.default}
        return [name for name in self._table() if name not in rows]


#: ``{"pytorch": BenchFormat(None), ..., "openvino_int8": ..., "onnx_int8": ...}`` from the format table.
BENCH_FORMATS = _BenchFormats()


def default_formats() -> list[str]:
    """Every row of :data:`BENCH_FORMATS` its format measures by default (not ``onnx_int8``: ONNX Runtime's int8
    loses more accuracy than OpenVINO's NNCF: -1.0 vs -0.5 mAP50-95 points on csptal_n / raccoon, at about the
    same speed; ask for it by name), and without the bf16 rows on CPUs that have no native bf16 (bf16 is emulated
    there and several times slower, so nobody would deploy it)."""
    native = native_bf16()
    return [name for name in BENCH_FORMATS.default_names() if native or BENCH_FORMATS[name].precision != "bf16"]


@dataclass
class BenchRow:
    """One format's measurements (NaN where a step failed; ``error`` says why)."""

    format: str
    file: str
    size_mb: float = float("nan")
    map50_95: float = float("nan")
    map50: float = float("nan")
    latency_ms_median: float = float("nan")
    latency_ms_p90: float = float("nan")
    throughput_b8_ips: float = float("nan")
    export_s: float = 0.0
    error: str = ""


def benchmark(weights: str | os.PathLike, data: str | os.PathLike | None = None, formats: Sequence[str] | None = None,
              out_dir: str | os.PathLike | None = None, img_size: int | Sequence[int] | None = None,
              latency_images: int = 30, throughput_images: int = 32, calib: int = 300, threads: int | None = None,
              log=print, csv_path: str | os.PathLike | None = None) -> list[BenchRow]:
    """Measure ``weights`` in each of ``formats`` (keys of :data:`BENCH_FORMATS`; default
    :func:`default_formats`).

    Args:
        weights: cspdet detector checkpoint.
        data: a config YAML (its ``data.dataset`` val split is scored with its ``eval`` settings) or a dataset
            descriptor (its val split, default eval settings); None: the dataset the checkpoint records, at its
            ``meta.img_size``.
        out_dir: where exports go (default: ``<weights dir>/<weights stem>_bench``).
        img_size: input size (default: the config's ``eval.img_size``, or the checkpoint's).
        latency_images: val images timed one by one (after 3 warm-up runs); throughput_images: images timed in
            batches of 8.
        calib: int8 calibration images.
        threads: intra-op threads of every backend (default: the runtime's own default).
        log: progress printer (None: silent).
        csv_path: rewrite this CSV after every format (so a crash in a later runtime keeps the rows measured).

    Returns:
        one :class:`BenchRow` per format; a format that fails records its one-line error and the rest go on.
    """
    formats = default_formats() if formats is None else list(formats)
    unknown = [f for f in formats if f not in BENCH_FORMATS]
    if unknown:
        raise ExportError(f"unknown benchmark format(s) {', '.join(unknown)}; choose from {', '.join(BENCH_FORMATS)}")
    cfg = bench_config(weights, data)
    if img_size is not None:
        cfg.eval.img_size = [int(img_size), int(img_size)] if isinstance(img_size, int) else [int(v) for v in img_size]
    hw = tuple(cfg.eval.img_size)
    if threads:
        torch.set_num_threads(int(threads))
    evaluator = COCOEvaluator.from_config(cfg)
    ds = evaluator.dataloader.dataset
    paths = [str(r.path) for r in getattr(getattr(ds, "dataset", ds), "records", [])]
    if not paths:
        raise ExportError(f"{data or cfg.data.dataset}: no val images to time")
    out = Path(out_dir) if out_dir else Path(weights).with_name(Path(weights).stem + "_bench")
    rows = []
    for name in formats:
        fmt, int8, precision, channels_last, dynamic = BENCH_FORMATS[name]
        row = BenchRow(name, str(weights))
        try:
            if fmt is not None:
                tic = time.perf_counter()
                path = out / (Path(weights).stem + export_suffix(fmt, int8))
                export_model(weights, fmt, img_size=hw, dynamic=dynamic, int8=int8, data=data or cfg.data.dataset,
                             calib=calib, out=path)
                row.export_s, row.file = time.perf_counter() - tic, str(path)
            row.size_mb = (get_format(fmt).size_bytes(row.file) if fmt else Path(row.file).stat().st_size) / 1e6
            # a checkpoint is fused, as Predictor does
            model = open_model(row.file, threads=threads, precision=precision, channels_last=channels_last)
            if model.num_classes != len(evaluator.class_names):
                raise ExportError(f"{row.file}: {model.num_classes} classes, the dataset has "
                                  f"{len(evaluator.class_names)}")
            metrics = evaluator.evaluate(model, plots=False)
            row.map50_95, row.map50 = float(metrics.stats["AP"]), float(metrics.stats["AP50"])
            meta = model.meta
            predictor = Predictor(model, meta.class_names, img_size=hw, conf=meta.conf, iou=meta.iou,
                                  max_det=meta.max_det, category_ids=meta.category_ids)
            row.latency_ms_median, row.latency_ms_p90 = _latency(predictor, paths, latency_images)
            row.throughput_b8_ips = _throughput(predictor, paths, throughput_images)
        except Exception as err:  # noqa: BLE001 -- one failing format (missing extra, odd op) must not stop the rest
            row.error = " ".join(str(err).split())[:300] or type(err).__name__
        rows.append(row)
        if csv_path is not None:
            write_csv(rows, csv_path)
        if log:
            log(format_table([row], header=not rows[:-1]))
    return rows


def bench_config(weights: str | os.PathLike, data: str | os.PathLike | None = None) -> Config:
    """The evaluation config of a benchmark: ``data`` as a config (with its own eval settings), or a dataset
    descriptor / the dataset the model's metadata records (found from here:
    :func:`cspdet.runtime.weights.recorded_dataset`) at the input size the model records.

    Raises:
        ConfigError: no ``data`` and the model records no dataset that exists from here.
    """
    if data is not None and not is_dataset_yaml(data):
        return config_for_data(data)  # a config: its own eval settings
    file = read_weights(weights)
    meta: Any = load_backend(file.path).meta.to_dict() if file.exported else checkpoint_meta(file.obj, weights)
    source = data
    if source is None:
        source, tried = recorded_dataset(meta)
        if source is None:
            where = f" (tried {', '.join(tried)} from {Path.cwd()})" if tried else ""
            raise ConfigError(f"{weights}: the checkpoint records no dataset found from here{where}; give --data "
                              "DATASET.yaml or CONFIG")
    cfg = config_for_data(source)  # a dataset descriptor has no eval settings: the input size the model records
    if meta.get("img_size"):
        cfg.eval.img_size = [int(v) for v in meta["img_size"]]
    return cfg


def _latency(predictor, paths: list[str], n: int) -> tuple[float, float]:
    """Median and p90 ms per image of ``predictor([path])`` (file read + decode + letterbox + forward + post)."""
    for p in paths[:3]:
        predictor([p])
    times = []
    for i in range(n):
        tic = time.perf_counter()
        predictor([paths[i % len(paths)]])
        times.append(1000 * (time.perf_counter() - tic))
    return float(np.median(times)), float(np.percentile(times, 90))


def _throughput(predictor, paths: list[str], n: int) -> float:
    """Images per second through ``predictor`` in batches of 8 (after one warm-up batch)."""
    batch = [paths[i % len(paths)] for i in range(max(n, 8))]
    predictor.batch_size = 8
    predictor(batch[:8])
    tic = time.perf_counter()
    predictor(batch)
    return len(batch) / (time.perf_counter() - tic)


_COLUMNS = [("format", "format", "{}"), ("size_mb", "size MB", "{:.1f}"), ("map50_95", "mAP50-95", "{:.4f}"),
            ("map50", "mAP50", "{:.4f}"), ("latency_ms_median", "ms/img p50", "{:.1f}"),
            ("latency_ms_p90", "ms/img p90", "{:.1f}"), ("throughput_b8_ips", "img/s b8", "{:.1f}"),
            ("export_s", "export s", "{:.1f}")]


def format_table(rows: Sequence[BenchRow], header: bool = True) -> str:
    """Rows as an aligned text table (errors after the row)."""
    widths = [max(len(title), 10) for _, title, _ in _COLUMNS]
    widths[0] = max(widths[0], 14)
    lines = ["  ".join(t.ljust(w) if i == 0 else t.rjust(w) for i, ((_, t, _), w) in enumerate(zip(_COLUMNS, widths)))
             ] if header else []
    for r in rows:
        cells = []
        for i, ((key, _, fmt), w) in enumerate(zip(_COLUMNS, widths)):
            v = getattr(r, key)
            text = "-" if isinstance(v, float) and np.isnan(v) else fmt.format(v)
            cells.append(text.ljust(w) if i == 0 else text.rjust(w))
        lines.append("  ".join(cells) + (f"  error: {r.error}" if r.error else ""))
    return "\n".join(lines)


def write_csv(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """All fields of ``rows`` as CSV (written atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(BenchRow)])
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return atomic_write(path, buf.getvalue())
