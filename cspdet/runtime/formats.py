"""The deploy-format table: one record per format, from which everything that knows formats derives.

The exporter (:func:`cspdet.export.export_detector`: writer, suffix, int8 / dynamic checks), the loader
(:func:`cspdet.runtime.open_model`: which file is which format, which backend runs it, on which devices), the
benchmark rows (:data:`cspdet.export.benchmark.BENCH_FORMATS`) and the command-line choices (``cspdet export
--format``, ``cspdet benchmark --formats``) all read this table. Adding a format is one file (its writer and its
backend) plus one :func:`register_format` call::

    register_format(DeployFormat(
        name="myrt", suffix=".myrt", writer=write_myrt, loader=MyRuntimeBackend,
        devices=("cpu",), int8=False, dynamic=True, extra="myrt", bench=(BenchVariant("myrt"),)))

A writer is ``writer(request)`` with a :class:`cspdet.export.WriteRequest` (the traced graph's module, an example
input, the output path, the metadata document to embed, the options); it may be given as ``"module:function"``,
resolved by the export layer when a file is written (the runtime never writes files, so it never imports the
writers). A loader is ``loader(path, device=..., threads=..., precision=...)`` returning a
:class:`cspdet.runtime.backends.Backend`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import OnnxBackend, OpenVINOBackend, TorchScriptBackend

__all__ = ["DEPLOYED_SUFFIXES", "BenchVariant", "DeployFormat", "deploy_formats", "deployed_format", "format_names",
           "get_format", "register_format", "suffix_table", "unregister_format"]


@dataclass(frozen=True)
class BenchVariant:
    """One benchmark row of a format: ``name`` (the row's key, e.g. ``openvino_int8``), int8 export, runtime
    precision, dynamic export (None: the format's :attr:`DeployFormat.bench_dynamic`), and whether it is among the
    rows measured by default."""

    name: str
    int8: bool = False
    precision: str = "fp32"
    dynamic: bool | None = None
    default: bool = True


@dataclass(frozen=True)
class DeployFormat:
    """One deploy format.

    Attributes:
        name: the format's name (``--format`` choice, ``info["format"]`` in the file).
        suffix: the suffix its files are written with (``.onnx``); ``aliases``: other suffixes it is recognised by.
        writer: ``writer(request)`` or ``"module:function"`` (see the module docstring).
        loader: ``loader(path, device=, threads=, precision=)`` -> a runtime backend.
        devices: device types its runtime runs on here (``cpu``, ``cuda``).
        int8: it can be written int8-quantised (``--int8``).
        dynamic: it can be written with dynamic batch / size (``--dynamic``).
        extra: the pip extra its writer / runtime need (``pip install 'cspdet[<extra>]'``), None when none.
        runtime: the runtime's name, for messages (``ONNX Runtime``).
        onnx_based: written through an ONNX graph (``--opset`` and onnxsim apply).
        companions: suffixes of files written beside it (OpenVINO's ``.bin``), counted in its size.
        sniff: ``sniff(path) -> bool`` for files its suffix does not reveal (a TorchScript ``.pt``, an OpenVINO
            folder); ``resolve(path) -> Path`` maps such a path to the file to load.
        bench: its benchmark rows; ``bench_dynamic``: whether benchmark exports are dynamic by default.
    """

    name: str
    suffix: str
    writer: Callable[..., Any] | str
    loader: Callable[..., Any]
    devices: tuple[str, ...] = ("cpu",)
    int8: bool = False
    dynamic: bool = True
    extra: str | None = "export"
    runtime: str = ""
    onnx_based: bool = False
    aliases: tuple[str, ...] = ()
    companions: tuple[str, ...] = ()
    sniff: Callable[[Path], bool] | None = None
    resolve: Callable[[Path], Path] | None = None
    bench: tuple[BenchVariant, ...] = ()
    bench_dynamic: bool = True

    def size_bytes(self, path: str | os.PathLike) -> int:
        """Bytes on disk of a file of this format and its companions."""
        p = Path(path)
        return p.stat().st_size + sum(p.with_suffix(s).stat().st_size for s in self.companions
                                      if p.with_suffix(s).is_file())


_FORMATS: dict[str, DeployFormat] = {}


def register_format(fmt: DeployFormat, replace: bool = False) -> DeployFormat:
    """Add ``fmt`` to the table (after the built-in ones); ``replace`` overwrites a format of the same name.

    Raises:
        ValueError: a name or suffix that another format already has.
    """
    if fmt.name in _FORMATS and not replace:
        raise ValueError(f"deploy format {fmt.name!r} is already registered")
    if not fmt.suffix.startswith("."):
        raise ValueError(f"deploy format {fmt.name!r}: suffix must start with '.', got {fmt.suffix!r}")
    taken = {s: f.name for f in _FORMATS.values() if f.name != fmt.name for s in (f.suffix, *f.aliases)}
    clash = [s for s in (fmt.suffix, *fmt.aliases) if s.lower() in taken]
    if clash:
        raise ValueError(f"deploy format {fmt.name!r}: suffix {clash[0]} already belongs to {taken[clash[0].lower()]}")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a registered format (tests)."""
    _FORMATS.pop(name, None)


def deploy_formats() -> list[DeployFormat]:
    """Every format, in registration order (built-ins first)."""
    return list(_FORMATS.values())


def format_names() -> list[str]:
    return list(_FORMATS)


def get_format(name: str) -> DeployFormat:
    """The record of ``name``; ``ValueError`` naming the choices for an unknown one."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(_FORMATS)}") from None


class LiveMapping(Mapping):
    """A read-only mapping recomputed from ``build()`` at every access: a view of the format table that stays
    current when a format is registered later (the suffix table here, the benchmark rows in
    :mod:`cspdet.export.benchmark`)."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build

    def __getitem__(self, key: str) -> Any:
        return self._build()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


def suffix_table() -> Mapping[str, str]:
    """``{".onnx": "onnx", ".xml": "openvino", ...}``, following later registrations."""
    return LiveMapping(lambda: {s: f.name for f in _FORMATS.values() for s in (f.suffix, *f.aliases)})


#: ``{suffix: format name}`` of every registered format (a live view: later registrations show).
DEPLOYED_SUFFIXES = suffix_table()


def deployed_format(path: str | os.PathLike) -> str | None:
    """The format of an exported file (by its suffix, else by a format's ``sniff``: a ``.pt`` that is a TorchScript
    archive, a folder holding one OpenVINO ``.xml``), None for anything else (a checkpoint). Reads at most a zip
    directory, never the weights."""
    p = Path(path)
    by_suffix = {s.lower(): f for f in _FORMATS.values() for s in (f.suffix, *f.aliases)}
    fmt = by_suffix.get(p.suffix.lower()) if not p.is_dir() else None
    if fmt is not None:
        return fmt.name
    for f in _FORMATS.values():
        if f.sniff is not None and f.sniff(p):
            return f.name
    return None


# ------------------------------------------------------------------------------------------ built-in formats


def _open_onnx(path: Path, device: Any = "cpu", threads: int | None = None, precision: str = "fp32") -> Any:
    return OnnxBackend(path, threads)


def _open_openvino(path: Path, device: Any = "cpu", threads: int | None = None, precision: str = "fp32") -> Any:
    return OpenVINOBackend(path, threads, precision)


def _open_torchscript(path: Path, device: Any = "cpu", threads: int | None = None, precision: str = "fp32") -> Any:
    return TorchScriptBackend(path, device)


def _openvino_folder(path: Path) -> bool:
    return path.is_dir() and len(list(path.glob("*.xml"))) == 1


def _openvino_file(path: Path) -> Path:
    return next(path.glob("*.xml")) if path.is_dir() else path


def _torchscript_archive(path: Path) -> bool:
    """A ``.pt`` / ``.pth`` zip holding TorchScript code (``torch.jit.save``), not a ``torch.save`` checkpoint."""
    if path.suffix.lower() not in (".pt", ".pth") or not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


register_format(DeployFormat(
    "onnx", ".onnx", "cspdet.export.exporters:write_onnx", _open_onnx, devices=("cpu",), int8=True, dynamic=True,
    runtime="ONNX Runtime", onnx_based=True,
    # onnx_int8 is not a default row: ONNX Runtime's int8 loses more accuracy than OpenVINO's NNCF (-1.0 vs -0.5
    # mAP50-95 points on csptal_n / raccoon) at about the same speed; ask for it by name
    bench=(BenchVariant("onnx"), BenchVariant("onnx_int8", int8=True, default=False))))
# OpenVINO benchmark files are static (OpenVINO runs static shapes 12-15 % faster, no first-shape compile).
register_format(DeployFormat(
    "openvino", ".xml", "cspdet.export.exporters:write_openvino", _open_openvino, devices=("cpu",), int8=True,
    dynamic=True, runtime="OpenVINO", onnx_based=True, companions=(".bin",), sniff=_openvino_folder,
    resolve=_openvino_file, bench_dynamic=False,
    bench=(BenchVariant("openvino"), BenchVariant("openvino_bf16", precision="bf16"),
           BenchVariant("openvino_int8", int8=True))))
register_format(DeployFormat(
    "torchscript", ".torchscript", "cspdet.export.exporters:write_torchscript", _open_torchscript,
    devices=("cpu", "cuda"), int8=False, dynamic=True, extra=None, runtime="TorchScript", aliases=(".ts", ".jit"),
    sniff=_torchscript_archive, bench=(BenchVariant("torchscript"),)))
