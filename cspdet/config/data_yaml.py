"""``--data YAML``: a config file or a dataset descriptor, told apart by their keys.

A config has the sections ``model`` / ``data`` / ``train`` / ``eval`` / ``pretrain`` (or a ``_base_``); a dataset
descriptor (``datasets/*.yaml``) has ``format`` / ``path`` / its splits. ``train`` can be either (a config
section or a descriptor's split), so it alone does not decide.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

import yaml

from .loading import load_config
from .schema import Config, ConfigError

__all__ = ["config_for_data", "is_dataset_yaml"]

_CONFIG_ONLY = {"model", "data", "eval", "pretrain", "_base_"}


def is_dataset_yaml(path: str | os.PathLike) -> bool:
    """True when ``path`` is a dataset descriptor rather than a config (see the module docstring).

    Raises:
        ConfigError: the file is missing or is not a YAML mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: not valid YAML ({' '.join(str(err).split())[:160]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a config or a dataset descriptor (a YAML mapping)")
    return "format" in raw or not (set(raw) & _CONFIG_ONLY)


def config_for_data(data: str | os.PathLike | None, overrides: typing.Sequence[str] = ()) -> Config:
    """The config of ``--data``: a config file as it is, a dataset descriptor as the default config with
    ``data.dataset`` set to it (``None``: the defaults); ``overrides`` apply on top."""
    if data is not None and is_dataset_yaml(data):
        cfg = load_config(None, overrides)
        cfg.data.dataset = os.fspath(data)
        return cfg
    return load_config(data, overrides)
