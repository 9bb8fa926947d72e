"""The training configuration: typed defaults, then an optional TOML/YAML file, then command-line overrides.

The resolved configuration is written to every run dir (`RunDir.config`), and `--resume` reads it back from there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from toolkit.artifacts import RunDir
from toolkit.errors import ConfigError, UsageError, did_you_mean
from toolkit.families import family_of, pretrained_variants, variant_names
from toolkit.settings import check_settings
from toolkit.train import augment as augmentation

# Training from scratch wants a much higher rate than fine-tuning: on the demo data convnext_test reached 95.2% in
# 10 epochs at lr2=1e-4 and 99.7% in 4 at 2e-3.
SCRATCH_LR = 2e-3
# At or below this, lr2 is a fine-tuning rate: from random weights the demo run above stalls near chance.
FINE_TUNE_LR = 1e-4
WEIGHT_WORDS = ("imagenet", "none", "auto")
LEGACY_INVARIANCE = "d4"  # what a saved config without 'invariance' trained with
CHOICES = {
    "model": variant_names(),
    "resize": ("bilinear", "nearest"),
    "class_weights": ("balanced", "none"),
    "invariance": tuple(augmentation.INVARIANCES),
    "optimizer": ("adamw", "lion"),
    "mixed_precision": ("auto", "on", "off"),
    "xla": ("auto", "on", "off"),
}


@dataclass
class TrainConfig:
    """Every knob of `cbtool train`. Phase 1 trains the head on a frozen backbone; phase 2 fine-tunes."""

    model: str = "convnext_tiny"
    weights: str = "auto"  # "imagenet", "none", a weights file, or "auto" (imagenet where the variant has them)
    input_size: int = 96
    resize: str = "bilinear"
    dropout: float = 0.2
    epochs1: int = 3  # phase 1: head only, backbone frozen (0 skips it)
    epochs2: int = 20  # phase 2: backbone unfrozen
    unfreeze: int | str = "all"  # phase 2: "all", or the number of last stages to unfreeze
    batch_size: int = 32
    lr1: float = 1e-3
    lr2: float = 1e-4  # fine-tuning; SCRATCH_LR when weights="none" and lr2 is not set
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * min_lr_ratio
    label_smoothing: float = 0.1
    class_weights: str = "balanced"
    augment: str = "basic"  # a preset or a comma list of stages (toolkit/train/augment.py)
    invariance: str = "none"  # what the label does not depend on: none, hflip, flip, d4
    holdout_families: tuple[str, ...] = ()  # corruption families the corrupt stage never draws
    patience: int = 5  # early stopping on validation accuracy, per phase (0 disables)
    seed: int = 0
    optimizer: str = "adamw"
    mixed_precision: str = "auto"  # float16 compute on a GPU that supports it
    xla: str = "auto"  # XLA compilation on a GPU
    val_fraction: float = 0.15  # held-out stratified split when no --val is given
    probe_size: int = 32

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_record(self) -> dict:
        """The augmentation this config trains with: invariance, stages, corruption families drawn and held out."""
        return augmentation.training_record(self.augment, self.invariance, self.holdout_families)

    @property
    def total_epochs(self) -> int:
        return self.epochs1 + self.epochs2


def split_epochs(total: int, weights: str) -> tuple[int, int]:
    """Turn one epoch budget into (phase 1, phase 2): a fifth for the head, none when there is nothing pretrained."""
    if weights == "none":
        return 0, total
    if total <= 1:
        return total, 0
    first = max(1, total // 5)
    return first, total - first


def parse_epochs(text: str) -> int | tuple[int, int]:
    """`--epochs 10` (a total) or `--epochs 2,8` (per phase)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--epochs: expected N or N1,N2 (whole numbers), found {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 0:
        raise ConfigError(f"--epochs: expected N or N1,N2 (whole numbers >= 0), found {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def resolve_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the file at `path` (TOML or YAML), then `overrides` (None values are ignored)."""
    values: dict[str, Any] = {}
    epochs: Any = None
    if path is not None:
        file_values = dict(read_config_file(path))
        epochs = file_values.pop("epochs", None)
        values.update(_check(file_values, str(path)))
        if epochs is not None:
            epochs = _check_epochs(epochs, str(path))
        _build(dict(values), epochs, str(path))  # the file alone must hold: its errors stay ConfigErrors (exit 1)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        if "epochs" in cli:
            epochs = _check_epochs(cli.pop("epochs"), "command line")
            values.pop("epochs1", None), values.pop("epochs2", None)
        values.update(_check(cli, "command line"))
        return _build(values, epochs, "command line")
    except ConfigError as exc:
        # What the file allowed, a flag broke: a bad option value, exit 2 like click's own.
        raise UsageError(str(exc)) from None


def _build(values: dict, epochs: Any, source: str) -> TrainConfig:
    """TrainConfig from checked values and the epoch budget, with the weights-dependent defaults, validated."""
    config = TrainConfig(**values)
    if config.weights == "auto":
        config.weights = "imagenet" if config.model in pretrained_variants() else "none"
    if config.weights == "none" and "lr2" not in values:
        config.lr2 = SCRATCH_LR
    if isinstance(epochs, int):
        config.epochs1, config.epochs2 = split_epochs(epochs, config.weights)
    elif epochs is not None:
        config.epochs1, config.epochs2 = epochs
    _validate(config, source)
    _check_weights(config.weights, source)
    return config


def _check_weights(weights: str, source: str) -> None:
    """A new run's weights: a known word or an existing file (a typo would otherwise fail later as a bad file)."""
    if weights in WEIGHT_WORDS or Path(weights).is_file():
        return
    raise ConfigError(f"{source}: setting 'weights' must be imagenet, none or an existing weights file, found "
                      f"{weights!r}{did_you_mean(weights, WEIGHT_WORDS[:2])}")


def config_warnings(config: TrainConfig) -> list[str]:
    """Settings that train without error but cannot learn: from-scratch weights with fine-tuning choices."""
    if config.weights != "none":
        return []
    found = []
    if config.epochs1 > 0:
        found.append(f"weights = none with epochs1 = {config.epochs1}: phase 1 trains only the head on a random frozen "
                     "backbone, which learns nothing; set epochs1 = 0 (--epochs N gives a from-scratch run all of "
                     "its epochs unfrozen) or train from pretrained weights")
    if config.lr2 <= FINE_TUNE_LR:
        found.append(f"weights = none with lr2 = {config.lr2:g}: a fine-tuning rate, too small to train from random "
                     f"weights; drop lr2 (from scratch it defaults to {SCRATCH_LR:g}) or set lr2 = {SCRATCH_LR:g}")
    return found


def read_config_file(path: str | Path) -> dict:
    """Read a TOML (.toml) or YAML (.yaml/.yml) mapping; YAML needs PyYAML installed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    elif suffix in (".yaml", ".yml"):
        data = _read_yaml(path, text)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
    else:
        raise ConfigError(f"{path}: unknown config format {suffix!r}; expected .toml, .yaml/.yml or .json")
    if isinstance(data, dict) and set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]  # a [train] table is accepted too
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    return data


def load_saved_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a previous `cbtool train` wrote to its run dir (`RunDir.config`)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{path}: no saved config; is {run_dir} a cbtool run dir?")
    data = read_config_file(path)
    # Before the setting existed, every geometric preset drew all 8 flips/rotations.
    data.setdefault("invariance", LEGACY_INVARIANCE)
    config = TrainConfig(**_check(data, str(path)))
    _validate(config, str(path))
    return config


def run_training_record(run_dir: str | Path | None) -> dict | None:
    """The training record of the run in `run_dir`; None (unknown) when the run dir or its config is gone, or the run
    predates the record (its config has no 'invariance': the old robust preset had corruptions of its own)."""
    if not run_dir or not RunDir(run_dir).config.is_file():
        return None
    try:
        if "invariance" not in read_config_file(RunDir(run_dir).config):
            return None
        return load_saved_config(run_dir).training_record()
    except ConfigError:
        return None


def recorded_families(record: dict | None) -> list[str] | None:
    """The corruption families a training record (a manifest's `training`) says were drawn; None when unknown."""
    families = record.get("corruption_families") if isinstance(record, dict) else None
    return [str(f) for f in families] if isinstance(families, list) else None


def _read_yaml(path: Path, text: str):
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the config as TOML") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc


def _check(values: Mapping[str, Any], source: str) -> dict:
    return check_settings(TrainConfig, values, source, extra_known=("epochs",))


def _check_epochs(value: Any, source: str) -> int | tuple[int, int]:
    if isinstance(value, str):
        return parse_epochs(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{source}: setting 'epochs' must be a whole number or a pair [phase1, phase2], found {value!r}")


def _validate(config: TrainConfig, source: str) -> None:
    for name, allowed in CHOICES.items():
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"{source}: setting '{name}' must be one of {', '.join(allowed)}, found {value!r}")
    positive = ("input_size", "batch_size", "probe_size")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"{source}: setting '{name}' must be >= 1, found {getattr(config, name)}")
    family = family_of(config.model)
    if config.input_size < family.min_input_size:
        raise ConfigError(f"{source}: setting 'input_size' must be >= {family.min_input_size} for {config.model} (the "
                          f"{family.name} family downsamples by {family.min_input_size}), found {config.input_size}")
    non_negative = ("epochs1", "epochs2", "lr1", "lr2", "weight_decay", "warmup_epochs", "min_lr_ratio", "patience")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"{source}: setting '{name}' must be >= 0, found {getattr(config, name)}")
    if config.total_epochs < 1:
        raise ConfigError(f"{source}: at least one epoch is needed (epochs1 + epochs2 = 0)")
    for name in ("dropout", "label_smoothing"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"{source}: setting '{name}' must lie in [0, 1), found {getattr(config, name)}")
    if not 0 < config.val_fraction < 1:
        raise ConfigError(f"{source}: setting 'val_fraction' must lie in (0, 1), found {config.val_fraction}")
    if not (config.unfreeze == "all" or (isinstance(config.unfreeze, int) and config.unfreeze >= 1)):
        raise ConfigError(f"{source}: setting 'unfreeze' must be 'all' or a number of stages >= 1, found {config.unfreeze!r}")
    if config.weights in ("", None):
        raise ConfigError(f"{source}: setting 'weights' must be 'imagenet', 'none' or a file path")
    augmentation.trained_families(augmentation.parse_augment(config.augment, source), config.holdout_families, source)
