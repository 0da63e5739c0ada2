"""The metadata document every exported file carries, read back on load (written by :func:`cspdet.export.export_info`).

One JSON document stored under the key :data:`INFO_KEY`: ONNX ``metadata_props``, OpenVINO ``rt_info``, a
TorchScript extra file (and whatever a registered format chooses).
"""

from __future__ import annotations

import json
from typing import Any

from ..models import DetectorMeta

__all__ = ["EXPORT_INFO_VERSION", "INFO_KEY", "dumps_info", "parse_info"]

#: Key of the metadata JSON in every format (ONNX metadata_props key, OpenVINO rt_info path, TorchScript extra file).
INFO_KEY = "cspdet"
#: Layout version of that JSON; bumped when its fields change incompatibly.
EXPORT_INFO_VERSION = 1


def parse_info(text: str | bytes | None, where: str) -> dict[str, Any]:
    """The metadata document read back from a file; raises ``ValueError`` (one line naming ``where``) when it is
    missing (not a cspdet export: another model family or tool), unreadable, or of a newer layout."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        raise ValueError(f"{where}: not a cspdet export (no '{INFO_KEY}' metadata; a model from another family or "
                         "tool?); export a cspdet checkpoint with tools/export.py")
    try:
        info = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: the '{INFO_KEY}' metadata is not valid JSON ({err})") from None
    if not isinstance(info, dict) or "cspdet_export" not in info or "meta" not in info:
        raise ValueError(f"{where}: the '{INFO_KEY}' metadata is not a cspdet export description")
    if int(info["cspdet_export"]) > EXPORT_INFO_VERSION:
        raise ValueError(f"{where}: exported by a newer cspdet (metadata layout {info['cspdet_export']}, this "
                         f"cspdet reads up to {EXPORT_INFO_VERSION}); upgrade cspdet")
    try:
        info["meta_obj"] = DetectorMeta.from_dict(info["meta"], f"{where}: metadata meta")
    except ValueError as err:
        raise ValueError(str(err)) from None
    if len(info["meta_obj"].class_names) != int(info.get("num_classes", -1)):
        raise ValueError(f"{where}: metadata has {len(info['meta_obj'].class_names)} class names for "
                         f"{info.get('num_classes')} classes")
    return info


def dumps_info(info: dict[str, Any]) -> str:
    """``info`` as compact JSON (without the parsed ``meta_obj``)."""
    return json.dumps({k: v for k, v in info.items() if k != "meta_obj"}, separators=(",", ":"))
