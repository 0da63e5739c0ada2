"""Typed configuration: YAML files mapped onto dataclasses.

A config file is YAML with up to four sections (``model``, ``data``, ``train``, ``eval``) and an optional
``_base_`` key naming another config (path relative to the file) whose values it overrides. Command-line
overrides look like ``train.epochs=10`` or ``data.img_size=[320,320]`` and are parsed as YAML scalars, then
converted to the field's declared type.

Every problem is a :class:`ConfigError` with a one-line message that names the key, the file and, for an
unknown key, the nearest valid key::

    model.widht: unknown key in configs/x.yaml; did you mean model.width?
    data.mosaic_prob: value 5.0 out of range [0, 1] in configs/x.yaml

Every numeric field has a declared range (:data:`FIELD_RANGES`, beside the dataclasses) or is declared free
(:data:`FREE_FIELDS`, with the reason); :func:`validate_config` checks them all, and :func:`range_type` turns
the same ranges into argparse ``type=`` checks for the command-line tools' numeric options.

This package imports nothing else of cspdet so that every layer can depend on it (``save_config`` alone
imports the stdlib-only :mod:`cspdet.fileio`, when called, for its atomic write).
"""

from .loading import (config_from_dict, config_to_dict, load_config, parse_override, read_raw_config, save_config,
                      validate_config)
from .ranges import FIELD_RANGES, FREE_FIELDS, Range, field_range, range_type
from .schema import Config, ConfigError, DataConfig, EvalConfig, ModelConfig, PretrainConfig, RunOptions, TrainConfig

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FIELD_RANGES",
    "FREE_FIELDS",
    "ModelConfig",
    "PretrainConfig",
    "Range",
    "RunOptions",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "field_range",
    "load_config",
    "parse_override",
    "range_type",
    "read_raw_config",
    "save_config",
    "validate_config",
]
