"""cspdet.config: YAML -> dataclasses, _base_ inheritance, overrides, validation messages."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from cspdet.config import (
    FIELD_RANGES,
    FREE_FIELDS,
    Config,
    ConfigError,
    Range,
    config_from_dict,
    config_to_dict,
    field_range,
    load_config,
    parse_override,
    range_type,
    save_config,
    validate_config,
)


def write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_follow_yolox_recipe():
    from cspdet.engine.optim import scaled_schedule_epochs

    cfg = load_config()
    assert cfg.model.name == "cspdarknet_s"
    # left unset, warm-up and the no-aug tail scale with the run: YOLOX's 5 / 15 at its 300 epochs
    assert cfg.train.warmup_epochs is None and cfg.train.no_aug_epochs is None and cfg.train.epochs == 300
    assert scaled_schedule_epochs(cfg.train.epochs) == (5, 15)
    assert cfg.train.ema_decay == 0.9998 and cfg.train.nesterov
    assert cfg.train.lr_per_image * 64 == pytest.approx(0.01)
    assert cfg.data.mosaic_scale == [0.1, 2.0] and cfg.data.shear == 2.0


def test_default_detection_config_loads(repo_root):
    cfg = load_config(repo_root / "configs" / "cspdarknet_yolo.yaml")
    assert cfg.model.name == "cspdarknet_s" and cfg.model.num_classes == 80
    assert cfg.data.dataset == "datasets/coco.yaml"


def test_every_shipped_config_loads(repo_root):
    configs = sorted((repo_root / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert isinstance(load_config(path), Config), path


def test_base_inheritance_overrides_and_keeps(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"name": "cspdarknet_l", "num_classes": 3}, "train": {"epochs": 7}})
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub / "child.yaml", {"_base_": "../base.yaml", "model": {"num_classes": 5}})
    cfg = load_config(child)
    assert cfg.model.name == "cspdarknet_l"  # from the base
    assert cfg.model.num_classes == 5  # overridden by the child
    assert cfg.train.epochs == 7


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_cli_overrides_convert_types(tmp_path):
    cfg = load_config(
        None,
        ["train.epochs=12", "train.lr_per_image=0.001", "data.img_size=320", "model.width=0.5",
         "train.grad_clip=null", "data.mosaic_scale=[0.5, 1.5]", "train.ema=false"],
    )
    assert cfg.train.epochs == 12
    assert cfg.train.lr_per_image == 0.001
    assert cfg.data.img_size == [320, 320]
    assert cfg.model.width == 0.5 and isinstance(cfg.model.width, float)
    assert cfg.train.grad_clip is None
    assert cfg.data.mosaic_scale == [0.5, 1.5]
    assert cfg.train.ema is False


def test_int_is_accepted_for_float_field():
    cfg = load_config(None, ["model.width=1"])
    assert cfg.model.width == 1.0 and isinstance(cfg.model.width, float)


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path / "x.yaml", {"model": {"widht": 0.5}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"model.widht: unknown key in {path}; did you mean model.width?"


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    base = write(tmp_path / "base.yaml", {"train": {"epochz": 3}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml", "train": {"epochs": 3}})
    with pytest.raises(ConfigError, match=rf"train.epochz: unknown key in {base}; did you mean train.epochs\?"):
        load_config(child)


def test_unknown_override_key_and_section():
    with pytest.raises(ConfigError, match=r"model.bogus: unknown key on the command line"):
        load_config(None, ["model.bogus=1"])
    with pytest.raises(ConfigError, match=r"trian: unknown section .*did you mean train\?"):
        load_config(None, ["trian.epochs=1"])


def test_wrong_type_names_expected_type(tmp_path):
    path = write(tmp_path / "x.yaml", {"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"train.epochs: expected int in .*x.yaml, got 'many' \(str\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"train.ema: expected bool"):
        load_config(None, ["train.ema=3"])
    with pytest.raises(ConfigError, match=r"train.optimizer: expected one of 'sgd', 'adamw'"):
        load_config(None, ["train.optimizer=lion"])


def test_bad_override_syntax_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("epochs=3")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("train.epochs")
    path = write(tmp_path / "bad.yaml", "model: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "model.name=cspdarknet_nano"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_img_size_accepts_one_number_or_a_pair_only():
    assert load_config(None, ["eval.img_size=416"]).eval.img_size == [416, 416]
    assert load_config(None, ["pretrain.img_size=160"]).pretrain.img_size == 160
    with pytest.raises(ConfigError, match=r"data.img_size: expected \[height, width\]"):
        load_config(None, ["data.img_size=[1, 2, 3]"])


def test_augmentation_fields_reach_the_data_pipeline():
    from cspdet.data.transforms import AugmentConfig

    cfg = load_config(None, ["data.mosaic_pool=0", "data.hsv_gains=[1, 2, 3]", "data.min_box_size=4"])
    aug = AugmentConfig.from_config(cfg.data)
    assert aug.mosaic_pool == 0 and tuple(aug.hsv_gains) == (1.0, 2.0, 3.0) and aug.min_box_size == 4.0


def test_value_ranges_are_checked():
    with pytest.raises(ConfigError, match=r"^train.batch_size: value 0 out of range \[1, inf\) on the command line$"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"data.img_size: sides must be multiples of 32"):
        load_config(None, ["data.img_size=[100, 128]"])
    with pytest.raises(ConfigError, match=r"data.multiscale_range: 5 x 32 px must stay below"):
        load_config(None, ["data.img_size=160", "data.multiscale_range=5"])
    # training needs two cells at stride 32 (a 1x1 map with a one-image last batch breaks BatchNorm); evaluation
    # and prediction run at 32; no side beyond 8192 (one letterboxed image alone would be gigabytes)
    with pytest.raises(ConfigError, match=r"^data.img_size\[0\]: value 32 out of range \[64, 8192\] on the command "
                                          r"line$"):
        load_config(None, ["data.img_size=32"])
    assert load_config(None, ["eval.img_size=32"]).eval.img_size == [32, 32]
    with pytest.raises(ConfigError, match=r"^eval.img_size\[0\]: value 100000 out of range \[32, 8192\]"):
        load_config(None, ["eval.img_size=100000"])


# ------------------------------------------------------------------------------- declared value ranges


def _is_numeric(tp) -> bool:
    """True for an annotation that can hold a number: int, float, Any, or lists / optionals of them."""
    if tp in (int, float, Any):
        return True
    return any(_is_numeric(arg) for arg in typing.get_args(tp))


def _numeric_fields():
    """("section.key", section dataclass, field name) of every numeric field of every config section."""
    out = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if _is_numeric(hints[f.name]):
                out.append((f"{section.name}.{f.name}", cls, f.name))
    return out


def _free(cls, name) -> str | None:
    return next((FREE_FIELDS[k][name] for k in cls.__mro__ if name in FREE_FIELDS.get(k, {})), None)


def test_every_numeric_field_has_a_range_or_is_declared_free():
    fields = _numeric_fields()
    assert len(fields) > 60  # the walk really covers the sections (train and pretrain inherit RunOptions)
    missing = [dotted for dotted, cls, name in fields if field_range(dotted) is None and not _free(cls, name)]
    assert not missing, f"numeric config fields without a declared range (FIELD_RANGES) or FREE_FIELDS entry: {missing}"
    both = [dotted for dotted, cls, name in fields if field_range(dotted) is not None and _free(cls, name)]
    assert not both
    # and the tables name only real fields
    for table in (FIELD_RANGES, FREE_FIELDS):
        for cls, entries in table.items():
            names = {f.name for f in dataclasses.fields(cls)}
            assert set(entries) <= names, (cls.__name__, set(entries) - names)
    load_config()  # every default lies inside its range


def _outside(rng: Range, integer: bool) -> list:
    """Values just outside ``rng`` (and NaN / inf for floats)."""
    values = []
    if rng.lo != -math.inf:
        values.append(rng.lo if rng.lo_open else rng.lo - 1)
    if rng.hi != math.inf:
        values.append(rng.hi if rng.hi_open else rng.hi + 1)
    if not integer:
        values += [math.nan, math.inf]
    return values


def _yaml(v) -> str:
    return ".nan" if isinstance(v, float) and math.isnan(v) else ".inf" if v == math.inf else repr(v)


@pytest.mark.parametrize("dotted", [d for d, _, _ in _numeric_fields() if field_range(d) is not None])
def test_every_declared_range_is_enforced(dotted, tmp_path):
    rng = field_range(dotted)
    section, _, key = dotted.partition(".")
    default = getattr(getattr(Config(), section), key)
    hint = typing.get_type_hints(type(getattr(Config(), section)))[key]
    integer = int in typing.get_args(hint) or hint is int or any(int in typing.get_args(a) for a in typing.get_args(hint))
    cases = []
    if isinstance(default, list) or isinstance(rng, tuple):
        base = list(default) if default is not None else [1] * len(rng)
        for i in range(len(base)):
            r = rng[i] if isinstance(rng, tuple) else rng
            for v in _outside(r, integer):
                value = [*base[:i], v, *base[i + 1:]]
                cases.append(("[" + ", ".join(_yaml(x) for x in value) + "]", f"{dotted}[{i}]", r))
        if isinstance(rng, tuple):  # a fixed number of elements
            with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}: expected {len(rng)} numbers on the"):
                load_config(None, [f"{dotted}=[" + ", ".join(_yaml(x) for x in [*base, base[0]]) + "]"])
    else:
        cases = [(_yaml(v), dotted, rng) for v in _outside(rng, integer)]
    assert cases
    for text, name, r in cases:
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"{dotted}={text}"])
        assert re.fullmatch(rf"{re.escape(name)}: value \S+ out of range {re.escape(str(r))} on the command line",
                            str(err.value)), str(err.value)
    # the same check in a file names the file
    text, name, r = cases[0]
    path = write(tmp_path / "x.yaml", f"{section}:\n  {key}: {text}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(name)}: value \S+ out of range .* in {re.escape(str(path))}$"):
        load_config(path)


def test_issue_examples_are_refused_with_one_line():
    with pytest.raises(ConfigError, match=r"^data.mosaic_prob: value 5.0 out of range \[0, 1\] on the command line$"):
        load_config(None, ["data.mosaic_prob=5"])
    with pytest.raises(ConfigError, match=r"^train.ema_decay: value 2.0 out of range \[0, 1\) on the command line$"):
        load_config(None, ["train.ema_decay=2.0"])
    with pytest.raises(ConfigError, match=r"^pretrain.ema_decay: value 1.0 out of range \[0, 1\)"):
        load_config(None, ["pretrain.ema_decay=1"])  # inherited and own fields of every section are checked
    with pytest.raises(ConfigError, match=r"^data.hsv_gains\[0\]: value 200.0 out of range \[0, 180\]"):
        load_config(None, ["data.hsv_gains=[200, 30, 30]"])
    # a config built in Python is checked by the same function (the trainers call it)
    cfg = Config()
    cfg.eval.conf = 2.0
    with pytest.raises(ConfigError, match=r"^eval.conf: value 2.0 out of range \[0, 1\] in <config>$"):
        validate_config(cfg)


def test_range_type_checks_cli_options_with_the_config_ranges(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--conf", type=range_type("eval.conf"))
    parser.add_argument("--max-det", type=range_type("eval.max_det"))
    parser.add_argument("--topk", type=range_type(Range(1), int))
    args = parser.parse_args(["--conf", "0.5", "--max-det", "10", "--topk", "3"])
    assert (args.conf, args.max_det, args.topk) == (0.5, 10, 3) and isinstance(args.max_det, int)
    for argv, message in [(["--conf", "2"], "argument --conf: value 2.0 out of range [0, 1]"),
                          (["--conf", "nan"], "argument --conf: value nan out of range [0, 1]"),
                          (["--max-det", "0"], "argument --max-det: value 0 out of range [1, inf)"),
                          (["--max-det", "1.5"], "argument --max-det: expected an integer, got '1.5'"),
                          (["--topk", "-1"], "argument --topk: value -1 out of range [1, inf)")]:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"tool: error: {message}"


def test_every_numeric_cli_option_has_a_range(repo_root):
    """The commands' numeric options (cspdet/cli and tools/) use range_type (the config's ranges), never a bare
    type=int / type=float."""
    files = sorted([*(repo_root / "tools").glob("*.py"), *(repo_root / "cspdet" / "cli").glob("*.py")])
    bare = [f"{p.name}:{n}" for p in files
            for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"type=(int|float)\b", line)]
    assert not bare, f"numeric CLI options without a declared range: {bare}"
    uses = sum(p.read_text().count("range_type(") for p in files)
    assert uses >= 10
