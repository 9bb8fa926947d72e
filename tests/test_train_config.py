"""Config resolution: typed defaults -> TOML/YAML file -> command-line overrides, and errors that name the field."""

from __future__ import annotations

import json

import pytest

from toolkit.errors import ConfigError, UsageError
from toolkit.fsutil import write_json
from toolkit.train.config import (TrainConfig, config_warnings, load_saved_config, parse_epochs, recorded_families, resolve_config,
                                  run_training_record, split_epochs)


def _toml(tmp_path, text, name="train.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    cfg = resolve_config()
    assert cfg == TrainConfig(weights="imagenet")
    scratch = resolve_config(overrides={"model": "convnext_test"})
    assert scratch.weights == "none" and scratch.lr2 == 2e-3  # no ImageNet weights: from scratch, at a higher rate
    assert resolve_config(overrides={"model": "convnext_test", "lr2": 1e-3}).lr2 == 1e-3
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    assert resolve_config(overrides={"model": "convnext_test", "weights": str(weights)}).weights == str(weights)
    assert (cfg.model, cfg.weights, cfg.augment, cfg.optimizer, cfg.class_weights) == (
        "convnext_tiny", "imagenet", "basic", "adamw", "balanced")
    assert (cfg.invariance, cfg.holdout_families) == ("none", ())  # no flip or 90-degree turn unless declared


def test_file_then_override_round_trip(tmp_path):
    path = _toml(tmp_path, 'model = "convnext_test"\nweights = "none"\nbatch_size = 16\nlr2 = 3e-4\nepochs = [2, 5]\n'
                 'augment = "strong"\nunfreeze = 2\n')
    cfg = resolve_config(path, {"batch_size": 8, "augment": None, "seed": 7})
    assert cfg.model == "convnext_test" and cfg.weights == "none"
    assert cfg.batch_size == 8  # the flag beats the file
    assert cfg.augment == "strong"  # None means "flag not given"
    assert cfg.seed == 7 and cfg.lr2 == pytest.approx(3e-4) and (cfg.epochs1, cfg.epochs2) == (2, 5)
    assert cfg.unfreeze == 2
    saved = tmp_path / "run" / "config.json"
    write_json(saved, cfg.to_dict())
    assert load_saved_config(saved.parent) == cfg
    assert json.loads(saved.read_text())["batch_size"] == 8


def test_train_table_and_int_to_float(tmp_path):
    path = _toml(tmp_path, '[train]\nlr1 = 1\nweight_decay = 0\n')
    cfg = resolve_config(path)
    assert isinstance(cfg.lr1, float) and cfg.lr1 == 1.0 and cfg.weight_decay == 0.0


def test_epochs_total_and_per_phase():
    assert parse_epochs("10") == 10 and parse_epochs("2,8") == (2, 8)
    assert split_epochs(10, "imagenet") == (2, 8)
    assert split_epochs(10, "none") == (0, 10)  # nothing pretrained: no frozen-backbone phase
    assert split_epochs(1, "imagenet") == (1, 0)
    cfg = resolve_config(overrides={"epochs": "6", "weights": "none"})
    assert (cfg.epochs1, cfg.epochs2) == (0, 6)
    cfg = resolve_config(overrides={"epochs": "1,4"})
    assert (cfg.epochs1, cfg.epochs2) == (1, 4)
    with pytest.raises(ConfigError, match="--epochs"):
        parse_epochs("two")


def test_unknown_key_names_file_and_field(tmp_path):
    path = _toml(tmp_path, 'batchsize = 4\n')
    with pytest.raises(ConfigError) as err:
        resolve_config(path)
    assert str(path) in str(err.value) and "'batchsize'" in str(err.value) and "batch_size" in str(err.value)


def test_bad_type_names_file_and_field(tmp_path):
    path = _toml(tmp_path, 'batch_size = "big"\n')
    with pytest.raises(ConfigError, match=r"train\.toml: setting 'batch_size' must be int, found str 'big'"):
        resolve_config(path)
    with pytest.raises(UsageError, match="'dropout' must be float"):
        resolve_config(overrides={"dropout": True})


def test_bad_choice_and_range(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.toml: setting 'augment' must be a preset \(none, basic, strong, robust\) "
                                          r"or a comma list of stages \(corrupt, .*geometric, .*found 'heavy'"):
        resolve_config(_toml(tmp_path, 'augment = "heavy"\n'))
    with pytest.raises(UsageError, match="setting 'invariance' must be one of none, hflip, flip, d4, found 'rot90'"):
        resolve_config(overrides={"invariance": "rot90"})
    with pytest.raises(UsageError, match="'model' must be one of"):
        resolve_config(overrides={"model": "resnet50"})
    with pytest.raises(UsageError, match="'batch_size' must be >= 1"):
        resolve_config(overrides={"batch_size": 0})
    with pytest.raises(UsageError, match="'unfreeze'"):
        resolve_config(overrides={"unfreeze": "some"})


def test_invalid_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        resolve_config(_toml(tmp_path, 'model = \n'))
    with pytest.raises(ConfigError, match="no such config file"):
        resolve_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown config format"):
        resolve_config(_toml(tmp_path, "x", name="train.ini"))


def test_yaml_needs_pyyaml_or_works(tmp_path):
    path = _toml(tmp_path, "model: convnext_test\nbatch_size: 4\n", name="train.yaml")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="PyYAML"):
            resolve_config(path)
    else:
        cfg = resolve_config(path)
        assert cfg.model == "convnext_test" and cfg.batch_size == 4


def test_augmentation_settings_round_trip_and_record(tmp_path):
    path = _toml(tmp_path, 'augment = "color, corrupt,geometric"\ninvariance = "hflip"\nholdout_families = ["haze", "bubbles"]\n')
    cfg = resolve_config(path)
    assert (cfg.augment, cfg.invariance, cfg.holdout_families) == ("color, corrupt,geometric", "hflip", ("haze", "bubbles"))
    record = cfg.training_record()
    assert record["stages"] == ["corrupt", "geometric", "color"]  # the order stages run in, whatever the order written
    assert record["invariance"] == "hflip" and record["holdout_families"] == ["bubbles", "haze"]
    assert "haze" not in record["corruption_families"] and "jpeg" in record["corruption_families"]
    saved = tmp_path / "run" / "config.json"
    write_json(saved, cfg.to_dict())
    assert json.loads(saved.read_text())["invariance"] == "hflip"  # config.json records the invariance
    assert load_saved_config(saved.parent) == cfg and run_training_record(saved.parent) == record
    assert resolve_config(overrides={"augment": "basic"}).training_record()["corruption_families"] == []


def test_holdout_families_are_checked(tmp_path):
    with pytest.raises(UsageError, match="command line: setting 'holdout_families' has unknown 'fog'"):
        resolve_config(overrides={"augment": "robust", "holdout_families": ("fog",)})
    with pytest.raises(ConfigError, match="train.toml: setting 'holdout_families' must be a list of str"):
        resolve_config(_toml(tmp_path, 'holdout_families = "haze"\n'))
    from toolkit.corruptions import FAMILIES

    with pytest.raises(UsageError, match="holds out every corruption family"):
        resolve_config(overrides={"augment": "robust", "holdout_families": FAMILIES})


def test_a_config_saved_before_invariance_existed_reads_as_d4_with_unknown_families(tmp_path):
    saved = tmp_path / "old" / "config.json"
    old = resolve_config(overrides={"augment": "robust"}).to_dict()
    del old["invariance"], old["holdout_families"]
    write_json(saved, old)
    assert load_saved_config(saved.parent).invariance == "d4"  # what every geometric preset drew then
    assert run_training_record(saved.parent) is None and run_training_record(tmp_path / "missing") is None
    assert recorded_families(None) is None and recorded_families({"corruption_families": ["jpeg"]}) == ["jpeg"]


def test_flag_values_are_usage_errors_and_file_values_config_errors(tmp_path):
    """A bad flag is a usage error (exit 2); the same value from a config file stays a ConfigError (exit 1)."""
    with pytest.raises(UsageError, match="command line: at least one epoch"):
        resolve_config(overrides={"epochs": "0"})
    with pytest.raises(UsageError, match="--epochs: expected N or N1,N2"):
        resolve_config(overrides={"epochs": "two"})
    path = _toml(tmp_path, "epochs = 0\n")
    with pytest.raises(ConfigError, match="at least one epoch") as err:
        resolve_config(path)
    assert not isinstance(err.value, UsageError)
    with pytest.raises(UsageError, match="'batch_size' must be >= 1"):  # the file is fine, the flag is not
        resolve_config(_toml(tmp_path, "batch_size = 8\n", "ok.toml"), {"batch_size": 0})
    with pytest.raises(UsageError, match=r"'weights' must be imagenet, none .*found 'imagnet' \(did you mean imagenet\?\)"):
        resolve_config(overrides={"weights": "imagnet"})


def test_from_scratch_with_fine_tuning_settings_warns():
    assert config_warnings(resolve_config(overrides={"model": "convnext_test", "epochs": "5"})) == []
    assert config_warnings(resolve_config(overrides={"epochs": "1,4"})) == []  # pretrained: both phases make sense
    found = config_warnings(resolve_config(overrides={"model": "convnext_test", "epochs": "1,4", "lr2": 1e-4}))
    assert len(found) == 2
    assert "epochs1 = 1" in found[0] and "random frozen backbone" in found[0] and "set epochs1 = 0" in found[0]
    assert "lr2 = 0.0001" in found[1] and "set lr2 = 0.002" in found[1]
