"""Reading, validating and writing configs: YAML + ``_base_`` inheritance + ``section.key=value`` overrides ->
typed, range-checked dataclasses (and back to YAML)."""


from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


from .ranges import FIELD_RANGES, _declared
from .schema import Config, ConfigError

__all__ = ["config_from_dict", "config_to_dict", "load_config", "parse_override", "read_raw_config", "save_config",
           "validate_config"]


# --------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read ``path`` (following ``_base_``), apply ``section.key=value`` overrides, validate.

    ``path=None`` gives the defaults (plus overrides).
    """
    raw: dict[str, Any] = {}
    source = "in <defaults>"
    merged_sources: dict[str, str] = {}
    if path is not None:
        raw, merged_sources = _read_with_bases(Path(path), chain=())
        source = f"in {path}"
    for text in overrides:
        dotted, value = parse_override(text)
        _set_dotted(raw, dotted, value)
        merged_sources[dotted] = "on the command line"
        merged_sources.setdefault(dotted.partition(".")[0], "on the command line")
    return config_from_dict(raw, source=source, key_sources=merged_sources)


def read_raw_config(path: str | Path) -> dict[str, Any]:
    """The YAML of a config file merged with its ``_base_`` chain, as plain data, before validation (what the
    file itself says, e.g. to compare its model section with a checkpoint's).

    Raises:
        ConfigError: an unreadable file, bad YAML or a broken ``_base_`` chain (one line).
    """
    return _read_with_bases(Path(path), chain=())[0]


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=10"`` -> ``("train.epochs", 10)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"override {text!r}: expected section.key=value (e.g. train.epochs=10)")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({_first_line(err)})") from None
    return key, value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({_first_line(err)})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except OSError as err:  # a folder, no permission, ...
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged data of ``path`` and its ``_base_`` chain, and which file each ``section.key`` came from."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: _base_ cycle: {cycle}")
    own = _read_yaml(path)
    base = own.pop("_base_", None)
    data, sources = own, {}
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must be a file path, got {type(base).__name__}")
        base_data, sources = _read_with_bases(path.parent / base, chain + (resolved,))
        data = _deep_merge(base_data, own)
    _record_sources(own, str(path), sources)
    return data, sources


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Values of ``top`` win; nested mappings merge key by key (lists are replaced whole)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _record_sources(raw: dict[str, Any], source: str, sources: dict[str, str]) -> None:
    for section, values in raw.items():
        if isinstance(values, dict):
            for key in values:
                sources[f"{section}.{key}"] = f"in {source}"
        sources[section] = f"in {source}"


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if "." in key:
        raise ConfigError(f"{dotted}: overrides take exactly section.key (nested keys are not supported)")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(raw[section]).__name__}")
    raw[section][key] = value


# ------------------------------------------------------------------------------------------ validation


def config_from_dict(
    raw: dict[str, Any], source: str = "in <dict>", key_sources: dict[str, str] | None = None
) -> Config:
    """Build a validated :class:`Config` from plain data (as read from YAML or a checkpoint)."""
    key_sources = key_sources or {}
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for section, values in raw.items():
        where = key_sources.get(str(section), source)
        if section not in sections:
            raise ConfigError(f"{section}: unknown section {where}{_suggest(str(section), sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys {where}, got {type(values).__name__}")
        cls = typing.get_type_hints(Config)[section]
        kwargs[section] = _build_section(cls, section, values, source, key_sources)
    cfg = Config(**kwargs)
    validate_config(cfg, source, key_sources)
    return cfg


def validate_config(cfg: Config, source: str = "in <config>", key_sources: dict[str, str] | None = None) -> None:
    """Check every field of ``cfg`` against its declared range (:data:`FIELD_RANGES`) and the checks that
    span fields; raises :class:`ConfigError` with a one-line message naming the key and where it was set."""
    key_sources = key_sources or {}
    for section in dataclasses.fields(Config):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            rng = _declared(type(part), f.name, FIELD_RANGES)
            value = getattr(part, f.name)
            if rng is None or value is None:
                continue
            dotted = f"{section.name}.{f.name}"
            where = key_sources.get(dotted, source)
            if not isinstance(value, (list, tuple)):
                if value not in rng:
                    raise ConfigError(f"{dotted}: value {value!r} out of range {rng} {where}")
                continue
            if isinstance(rng, tuple) and len(value) != len(rng):
                raise ConfigError(f"{dotted}: expected {len(rng)} numbers {where}, got {list(value)!r}")
            for i, v in enumerate(value):
                r = rng[i] if isinstance(rng, tuple) else rng
                if v not in r:
                    raise ConfigError(f"{dotted}[{i}]: value {v!r} out of range {r} {where}")
    for dotted in ("data.img_size", "eval.img_size"):
        section, _, key = dotted.partition(".")
        size = getattr(getattr(cfg, section), key)
        if any(v % 32 for v in size):
            raise ConfigError(f"{dotted}: sides must be multiples of 32 (the largest stride) "
                              f"{key_sources.get(dotted, source)}, got {size}")
    freeze = cfg.train.freeze
    if (isinstance(freeze, int) and freeze < 0) or freeze == "" or (isinstance(freeze, list) and "" in freeze):
        raise ConfigError(f"train.freeze: expected a count >= 0 or module names (backbone, neck, backbone.stages.0, "
                          f"...) {key_sources.get('train.freeze', source)}, got {freeze!r}")
    if cfg.train.patience and cfg.train.eval_interval == 0:
        raise ConfigError(f"train.patience: early stopping compares evaluations; set train.eval_interval > 0 "
                          f"{key_sources.get('train.patience', source)}")
    if 32 * cfg.data.multiscale_range >= min(cfg.data.img_size):
        raise ConfigError(f"data.multiscale_range: {cfg.data.multiscale_range} x 32 px must stay below the smaller "
                          f"side of data.img_size {cfg.data.img_size} {key_sources.get('data.multiscale_range', source)}")


def _build_section(cls: type, section: str, values: dict[str, Any], source: str, key_sources: dict[str, str]):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        where = key_sources.get(dotted, source)
        if key not in hints:
            candidates = {f"{section}.{n}": n for n in names}
            raise ConfigError(f"{dotted}: unknown key {where}{_suggest(dotted, candidates)}")
        is_size = key == "img_size" and typing.get_origin(hints[key]) is list
        if is_size and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]  # a single number means a square input: img_size=320 -> [320, 320]
        kwargs[key] = _convert(value, hints[key], dotted, where)
        if is_size and len(kwargs[key]) != 2:
            raise ConfigError(f"{dotted}: expected [height, width] or one number {where}, got {value!r}")
    return cls(**kwargs)


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, dotted: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow the harmless conversions (int -> float)."""
    try:
        return _coerce(value, tp)
    except (TypeError, ValueError):
        got = f"{value!r} ({type(value).__name__})"
        raise ConfigError(f"{dotted}: expected {_type_name(tp)} {where}, got {got}") from None


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce(v, arg) for v in value]
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise TypeError
        return {_coerce(k, key_tp): _coerce(v, value_tp) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())


# ------------------------------------------------------------------------------------------- writing


def config_to_dict(cfg: Config, sections: typing.Iterable[str] | None = None) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON/checkpoint friendly) of a config; only ``sections`` when given (a
    detection run uses model, data, train and eval; pretraining only pretrain)."""
    raw = dataclasses.asdict(cfg)
    return raw if sections is None else {name: raw[name] for name in sections}


def save_config(cfg: Config, path: str | Path, sections: typing.Iterable[str] | None = None) -> Path:
    """Write the resolved config (only ``sections`` when given) as YAML so a run can be reproduced with
    ``load_config(path)`` (sections left out load as their defaults).

    The write is atomic (:func:`cspdet.fileio.atomic_write`); a full disk or read-only directory raises
    :class:`cspdet.fileio.OutputError` with the previous file intact.
    """
    from ..fileio import atomic_write  # stdlib-only; imported here so the config package stays cspdet-free

    return atomic_write(path, yaml.safe_dump(config_to_dict(cfg, sections), sort_keys=False))
