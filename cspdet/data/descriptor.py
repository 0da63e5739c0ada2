"""Dataset descriptors: the YAML (or dict) that says where a dataset's images and annotations are, in which format,
with which classes -- read and checked here, one line per problem; :func:`cspdet.data.build_dataset` builds a
split from it. Ultralytics dataset YAMLs (``path`` / ``train`` / ``val`` / ``names``) are descriptors too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .problems import DatasetError
from .records import _is_int

__all__ = ["load_descriptor"]


_FORMATS = ("coco", "yolo", "voc")


def load_descriptor(descriptor: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """Read and normalise a dataset descriptor (see ``datasets/README.md``).

    Returns a dict with ``format``, ``root`` (absolute Path), ``names`` (list or None), ``category_ids``
    (list or None), ``splits`` (name -> raw spec), ``name``, ``source`` and ``allow_outside`` (may image paths
    in annotation files lead outside the dataset's image folder; default False).

    Relative ``path`` values are resolved against the descriptor file's directory first, then the
    current directory (Ultralytics YAMLs are often written relative to where training is started).
    """
    if isinstance(descriptor, (str, os.PathLike)):
        src = Path(descriptor)
        if not src.is_file():
            raise DatasetError(f"{src}: dataset descriptor not found")
        import yaml

        try:
            raw = yaml.safe_load(src.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(f"{src}: cannot read the dataset descriptor as UTF-8 text ({err})") from None
        except RecursionError:
            raise DatasetError(f"{src}: malformed YAML: nested too deeply") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            if mark is not None:  # "file:line: what" rather than PyYAML's multi-line report
                what = " ".join(f"{getattr(err, 'context', None) or ''} {getattr(err, 'problem', None) or ''}".split())
                raise DatasetError(f"{src}:{mark.line + 1}: malformed YAML at column {mark.column + 1} ({what})") from None
            raise DatasetError(f"{src}: malformed YAML ({' '.join(str(err).split())})") from None
        base_dir = src.resolve().parent
        name = src.stem
    elif isinstance(descriptor, dict):
        raw, src, base_dir = dict(descriptor), "<dict>", Path.cwd()
        name = str(raw.get("name", "dataset"))
    else:
        raise TypeError(f"descriptor must be a path or a dict, got {type(descriptor).__name__}")
    if not isinstance(raw, dict):
        raise DatasetError(f"{src}: a dataset descriptor must be a YAML mapping, got {type(raw).__name__}")
    fmt = raw.get("format")
    if fmt is None:
        fmt = "yolo" if "names" in raw and ("train" in raw or "val" in raw) else None
    if fmt not in _FORMATS:
        raise DatasetError(f"{src}: 'format' must be one of {', '.join(_FORMATS)}, got {_short(fmt)}")

    root_text = raw.get("path", ".")
    if not isinstance(root_text, (str, int, float)):
        raise DatasetError(f"{src}: 'path' must be the dataset's root folder, got {_short(root_text)}")
    root = Path(os.path.expanduser(str(root_text)))
    if not root.is_absolute():
        candidates = [base_dir / root, Path.cwd() / root]
        root = next((c for c in candidates if c.exists()), candidates[0])
    if not root.exists():
        raise DatasetError(f"{src}: dataset root {root_text!r} not found (resolved to {root})")
    if not root.is_dir():
        raise DatasetError(f"{src}: dataset root {root_text!r} is a file, not a folder (resolved to {root})")

    names = raw.get("names")
    if isinstance(names, dict):  # Ultralytics style {0: person, 1: bicycle}
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f"{src}: 'names' mapping keys must be class indices 0..C-1") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{src}: 'names' keys must be exactly 0..{len(keys) - 1}, got {keys[:10]}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    elif names is not None and (not isinstance(names, list) or not names):
        raise DatasetError(f"{src}: 'names' must be a non-empty list (or {{index: name}} mapping)")
    if names is not None:
        # a name is a string (or a number); anything else would be turned into text first, and a YAML alias
        # bomb (names: *nested) into gigabytes of it
        bad = next((k for k, n in enumerate(names) if not isinstance(n, (str, int, float))), None)
        if bad is not None:
            raise DatasetError(f"{src}: class name {bad} must be a string, got a {type(names[bad]).__name__}")
        names = [str(n) for n in names]
    if names is not None and "nc" in raw and raw["nc"] != len(names):
        raise DatasetError(f"{src}: nc={_short(raw['nc'])} but {len(names)} names")
    if names is not None and len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"{src}: duplicate class names {dup}")
    category_ids = raw.get("category_ids")
    if category_ids is not None:
        if not (isinstance(category_ids, list) and all(_is_int(c) for c in category_ids)):
            raise DatasetError(f"{src}: 'category_ids' must be a list of integers (64-bit)")
        if names is not None and len(category_ids) != len(names):
            raise DatasetError(f"{src}: {len(category_ids)} category_ids but {len(names)} names")
        if len(set(category_ids)) != len(category_ids):
            raise DatasetError(f"{src}: 'category_ids' has duplicates")
    if fmt == "yolo" and names is None:
        raise DatasetError(f"{src}: a YOLO dataset needs 'names' (class names, index = class id in the txt files)")
    allow_outside = raw.get("allow_outside", False)
    if not isinstance(allow_outside, bool):
        raise DatasetError(f"{src}: 'allow_outside' must be true or false, got {_short(allow_outside)}")
    splits = {k: raw[k] for k in ("train", "val", "test") if raw.get(k) is not None}
    extra = raw.get("splits") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise DatasetError(f"{src}: 'splits' must be a mapping of split names to their files, got {_short(extra)}")
    splits.update(extra)
    if not splits:
        raise DatasetError(f"{src}: no splits: give at least one of train, val, test")
    return {
        "format": fmt, "root": root.resolve(), "names": names, "category_ids": category_ids,
        "splits": splits, "name": str(raw["name"]) if isinstance(raw.get("name"), (str, int)) else name,
        "source": str(src), "allow_outside": allow_outside,
    }  # fmt: skip


def _short(value: Any) -> str:
    """A bounded repr for messages (a YAML alias bomb is tiny in the file and astronomically long as text)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)[:80]
    return f"a {type(value).__name__}"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _resolve(root: Path, value: Any, src: str, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise DatasetError(f"{src}: {what} must be a path string, got a {type(value).__name__}")
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else root / p
