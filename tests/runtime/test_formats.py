"""The deploy-format table: a new format is one record, registered from this file alone, and then the exporter
(``cspdet export``), the loader (``open_model`` / ``Predictor``), the benchmark and the CLI choices all know it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from export_helpers import HW, fused, live_detector  # tests/export_helpers.py

from cspdet.export import EXPORT_FORMATS, WriteRequest, export_detector
from cspdet.export.graph import dumps_info
from cspdet.runtime import InferenceModel, Predictor, open_model, weights_kind
from cspdet.runtime.backends import Backend
from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
from cspdet.runtime.formats import (
    DEPLOYED_SUFFIXES,
    BenchVariant,
    DeployFormat,
    deployed_format,
    format_names,
    register_format,
    unregister_format,
)
from cspdet.runtime.metadata import parse_info

# ------------------------------------------------------------------ the new format: a writer, a backend, one record
# "zipped TorchScript": the traced graph and the metadata JSON as two entries of a plain zip (no pickle of ours).


def write_zipped_ts(req: WriteRequest) -> None:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(req.graph, req.example, check_trace=False), buf)
    with zipfile.ZipFile(req.out, "w") as z:
        z.writestr("graph.pt", buf.getvalue())
        z.writestr("meta.json", dumps_info(req.info))
    req.notes.append("zipped")


class ZippedTSBackend(Backend):
    name = "zipped-ts"

    def __init__(self, path: Path, device="cpu", threads=None, precision="fp32") -> None:
        with zipfile.ZipFile(path) as z:
            info = parse_info(z.read("meta.json").decode(), str(path))
            self.module = torch.jit.load(io.BytesIO(z.read("graph.pt")), map_location="cpu").eval()
        super().__init__(path, info)

    @torch.inference_mode()
    def run(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)


ZIPPED_TS = DeployFormat("zipts", ".zipts", write_zipped_ts, ZippedTSBackend, devices=("cpu",), int8=False,
                         dynamic=True, extra=None, runtime="zipped TorchScript", bench=(BenchVariant("zipts"),))


@pytest.fixture
def zipts():
    register_format(ZIPPED_TS)
    try:
        yield ZIPPED_TS
    finally:
        unregister_format("zipts")


@pytest.fixture
def checkpoint(tmp_path):
    model = live_detector("cspdarknet_nano")
    path = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(), model.state_dict()),
                           tmp_path / "nano.pt")
    return model, path


def test_a_registered_format_is_known_everywhere(zipts, checkpoint, tmp_path, capsys, coco128_val_subset):
    from cspdet.cli.export import export as export_cli
    from cspdet.export.benchmark import BENCH_FORMATS, benchmark, format_table

    model, weights = checkpoint
    # the table: names, suffixes, the exporters' list, the benchmark rows
    assert "zipts" in format_names() and "zipts" in EXPORT_FORMATS and DEPLOYED_SUFFIXES[".zipts"] == "zipts"
    assert BENCH_FORMATS["zipts"].export == "zipts"
    # the command line: a --format choice, listed in --help with its suffix
    with pytest.raises(SystemExit) as exit_:
        export_cli(["--help"])
    assert exit_.value.code == 0
    assert "zipts (.zipts)" in " ".join(capsys.readouterr().out.split())
    # cspdet export writes it, named by its format
    assert export_cli([str(weights), "--format", "zipts", "--out", str(tmp_path / "model")]) == 0
    path = tmp_path / "model.zipts"
    assert path.is_file() and zipfile.is_zipfile(path) and "(zipts, fp32" in capsys.readouterr().out
    # the runtime recognises and opens it; its detections equal the PyTorch model's
    assert weights_kind(path) == "zipts" and deployed_format(path) == "zipts"
    deployed = open_model(path)
    assert isinstance(deployed, InferenceModel) and deployed.backend.name == "zipped-ts"
    images = torch.full((1, 3, *HW), 114.0)
    images[:, :, 20:70, 30:100] = torch.linspace(0, 255, 70)
    ref = fused(model)(images)
    torch.testing.assert_close(deployed(images), ref, atol=1e-3, rtol=1e-4)
    # Predictor.from_checkpoint on the file
    predictor = Predictor.from_checkpoint(path, device="cpu", conf=0.2)
    result = predictor(images[0].permute(1, 2, 0).numpy().astype("uint8"))[0]
    assert result.class_names == model.meta.class_names
    # the benchmark measures it as one more row
    rows = benchmark(weights, coco128_val_subset(2), formats=["pytorch", "zipts"], out_dir=tmp_path / "bench",
                     img_size=HW, latency_images=1, throughput_images=8, log=None)
    assert [r.format for r in rows] == ["pytorch", "zipts"] and not rows[1].error, rows[1].error
    assert rows[1].file.endswith("nano.zipts") and rows[1].map50_95 == pytest.approx(rows[0].map50_95, abs=1e-3)
    assert "zipts" in format_table(rows)


def test_the_table_drives_the_exporter_checks(zipts, checkpoint, tmp_path):
    from cspdet.runtime.errors import ExportError

    model, _ = checkpoint
    with pytest.raises(ExportError, match="--int8 is available for onnx and openvino exports, not zipts"):
        export_detector(model, "zipts", tmp_path / "m.zipts", int8=True, data="x.yaml")
    with pytest.raises(ExportError, match="unknown export format 'nope'; choose one of onnx, openvino, torchscript, "
                                          "zipts"):
        export_detector(model, "nope", tmp_path / "m.nope")
    with pytest.raises(ValueError, match="suffix .onnx already belongs to onnx"):
        register_format(DeployFormat("other", ".onnx", write_zipped_ts, ZippedTSBackend))


def test_unregistered_format_is_gone(tmp_path):
    assert "zipts" not in format_names() and deployed_format(tmp_path / "m.zipts") is None
