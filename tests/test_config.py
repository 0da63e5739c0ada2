"""cspdet.config: YAML -> dataclasses, _base_ inheritance, overrides, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cspdet.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)


def write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_follow_yolox_recipe():
    cfg = load_config()
    assert cfg.model.name == "cspdarknet_s"
    assert cfg.train.warmup_epochs == 5 and cfg.train.no_aug_epochs == 15
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
    with pytest.raises(ConfigError, match=r"train.batch_size: must be >= 1 on the command line, got 0"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"data.img_size: sides must be multiples of 32"):
        load_config(None, ["data.img_size=[100, 128]"])
    with pytest.raises(ConfigError, match=r"data.multiscale_range: 5 x 32 px must stay below"):
        load_config(None, ["data.img_size=160", "data.multiscale_range=5"])
