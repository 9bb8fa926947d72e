"""Two-phase fine-tuning of a registry model (toolkit.families) into a run dir, resumable epoch by epoch.

Phase 1 trains the head on a frozen backbone with the higher learning rate; phase 2 unfreezes the backbone (or its
last N stages; the family's freezing rule says which layers) with the lower one. Both use AdamW (or Lion) with weight
decay kept off norms, biases and layer-scale gammas, cosine decay with linear warmup, label smoothing, class weights,
and early stopping on validation accuracy that restores the best weights. On a GPU: mixed precision and XLA; on more than one GPU: MirroredStrategy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.data.io import Dataset
from toolkit.errors import ConfigError, DataError
from toolkit.families import family_of
from toolkit.train import pipeline, recover, rundir
from toolkit.train.config import TrainConfig, config_warnings, load_saved_config
from toolkit.train.tracker import Progress, Tracker

NO_DECAY_NAMES = ["bias", "gamma", "beta", "layer_scale"]
# A training file in a grader's own layout names the profile whose contract says how many classes it scores.
SCHEMA_PROFILES = {"an2dl2024": "an2dl-2024", "an2dl2023": "an2dl-2023"}


@dataclass
class TrainResult:
    """What a call to `train` did: finished or stopped, final metrics when finished."""

    run_dir: Path
    completed: bool
    epochs_done: int
    epochs_this_run: int
    best_epoch: int | None
    best_val_accuracy: float | None
    seconds: float
    metrics: dict | None = None
    devices: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    early_stops: list[dict] = field(default_factory=list)  # recover.early_stop_record, one per phase that stopped
    final_phase: int = 2

    @property
    def stopped_early(self) -> dict | None:
        """The early stop that ended the run (its last phase's), or None when it ran all its epochs."""
        return recover.final_stop(self.early_stops, self.final_phase)

    def summary(self) -> dict:
        out = {
            "run_dir": str(self.run_dir),
            "completed": self.completed,
            "epochs_done": self.epochs_done,
            "epochs_this_run": self.epochs_this_run,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "seconds": round(self.seconds, 2),
            "devices": self.devices,
            "stopped_early": self.stopped_early,
            "early_stops": self.early_stops,
            "warnings": self.warnings,
        }
        if self.metrics:
            keys = ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "chance_level", "near_chance")
            out.update({k: self.metrics[k] for k in keys})
            out["epochs_trained"] = self.metrics["epochs_done"]
        return out

    def describe_stops(self) -> list[str]:
        """One line per early stop, the run's own last."""
        return [recover.describe_early_stop(s, s["phase"] == self.final_phase) for s in self.early_stops]


def load_training_data(data_path: str | Path, val_path: str | Path | None = None,
                       allow_pickle: bool = False) -> tuple[Dataset, Dataset | None]:
    """Load the training npz and the optional validation npz, with validation labels mapped onto training classes."""
    from toolkit.data.io import load_dataset

    data = load_dataset(data_path, allow_pickle=allow_pickle)
    if val_path is None:
        return data, None
    val = load_dataset(val_path, allow_pickle=allow_pickle, num_classes=data.num_classes)
    if list(val.class_names) != list(data.class_names):
        unknown = [name for name in val.class_names if name not in data.class_names]
        if unknown:
            raise DataError(f"{val_path}: classes {unknown} do not occur in the training classes {data.class_names}")
        lookup = np.array([data.class_names.index(name) for name in val.class_names], dtype=np.int64)
        val = dataclasses.replace(val, labels=lookup[val.labels], class_names=list(data.class_names))
    return data, val


def coverage_warnings(train_set: Dataset, val_set: Dataset, val_given: bool) -> list[str]:
    """Classes of the class list with no image to learn from, or none to be scored on."""
    found = []
    for name, where, data in (("training", "the training data", train_set),
                              ("validation", "--val" if val_given else "the held-out validation split", val_set)):
        absent = [c for c, n in data.class_counts().items() if n == 0]
        if absent:
            consequence = ("the model gets an output for each but can never predict them" if name == "training" else
                           "their accuracy is never measured, and the validation accuracy overstates the model")
            found.append(f"no image of class {', '.join(map(repr, absent))} in {where} ({len(absent)} of "
                         f"{data.num_classes} classes): {consequence}")
    return found


def contract_warnings(data: Dataset) -> list[str]:
    """A class count that differs from what the grader of the data's file layout scores (a class missing entirely)."""
    from toolkit.runtime.profiles import get_profile

    name = SCHEMA_PROFILES.get(str(data.schema))
    expected = getattr(get_profile(name).contract, "num_classes", None) if name else None
    if expected is None or expected == data.num_classes:
        return []
    return [f"{data.source}: {data.num_classes} classes ({', '.join(data.class_names)}) in the {name} file layout, "
            f"whose grader scores {expected}: was a class missing from the data? A submission of this model fails "
            f"`cbtool check --profile {name}`"]


def split_validation(data: Dataset, val: Dataset | None, config: TrainConfig) -> tuple[Dataset, Dataset]:
    """The given validation set, or a seeded stratified hold-out of `config.val_fraction` of `data`."""
    if val is not None:
        if list(val.class_names) != list(data.class_names):
            raise DataError(f"validation classes {val.class_names} differ from training classes {data.class_names}")
        return data, val
    train_idx, val_idx = pipeline.stratified_split(data.labels, config.val_fraction, config.seed)
    return data.subset(train_idx), data.subset(val_idx)


def train(data: Dataset, val: Dataset | None, config: TrainConfig | None, run_dir: str | Path, *, resume: bool = False,
          verbose: bool = True, log: Callable[[str], None] | None = None, stop_after_epochs: int | None = None,
          warn: Callable[[str], None] | None = None, resume_command: str | None = None) -> TrainResult:
    """Train into `run_dir` (or continue the run there with `resume`); `stop_after_epochs` stops early like an interrupt.

    `warn` gets each warning as it is found; Ctrl-C raises `recover.TrainingInterrupted` naming `resume_command`."""
    import keras

    started = time.perf_counter()
    run_dir = Path(run_dir)
    log = log or (lambda message: None)
    warn = warn or log
    config, state = _open_run(run_dir, config, resume)
    train_set, val_set = split_validation(data, val, config)
    fingerprint = pipeline.data_fingerprint(train_set.images, train_set.labels, val_set.images, val_set.labels)
    if resume and state["data_sha256"] != fingerprint:
        raise DataError(f"{run_dir}: the training/validation data differ from the data this run started with; cannot resume")
    warnings = _warnings(data, train_set, val_set, val is not None, config, warn)
    keras.utils.set_random_seed(config.seed)
    devices = _devices(config)
    log(f"training {config.model} on {len(train_set)} images, validating on {len(val_set)} ({devices['summary']})")
    log(f"augmentation: {_describe_augmentation(config)}")
    spec = _model_spec(config, train_set.class_names)
    # Build first: a failure to get the weights (offline imagenet, a bad path) leaves no run dir behind that would
    # make the corrected command ask for --resume.
    last = RunDir(run_dir).last_weights
    model = _build(spec, config, devices, resume_from=last if resume and last.is_file() else None)
    if not resume:
        rundir.write_setup(run_dir, config, spec)
        rundir.write_probe_inputs(recover.probe_inputs_path(run_dir), val_set, config.probe_size)
        state = rundir.new_state(fingerprint)
    state.update(warnings=warnings, resume_command=resume_command or state.get("resume_command"))
    rundir.save_state(run_dir, state)
    tracker = Tracker(run_dir, state, config.patience, stop_after_epochs, twin=_twin(spec))
    try:
        _run_phases(model, tracker, train_set, val_set, config, devices, verbose, log)
        result = _result(run_dir, state, tracker, config, devices, warnings, started)
        if tracker.interrupted:
            log(f"stopped after {state['epoch']} epochs; continue with --resume")
            return result
        result.metrics = _finish(run_dir, spec, val_set, state, config, tracker)
    except KeyboardInterrupt:
        # What is on disk is what a --resume continues from (the epoch in flight is lost).
        raise recover.TrainingInterrupted(run_dir, rundir.read_state(run_dir), config.total_epochs) from None
    for message in result.metrics["warnings"][len(warnings):]:  # found in the final evaluation (near chance)
        warn(message)
    result.warnings = result.metrics["warnings"]
    state["completed"] = True
    rundir.save_state(run_dir, state)
    result.completed, result.seconds = True, time.perf_counter() - started
    return result


def _open_run(run_dir: Path, config: TrainConfig | None, resume: bool) -> tuple[TrainConfig, dict | None]:
    """The config and saved state of the run to resume, or the config of a new run (and no state yet)."""
    if not resume:
        rundir.check_fresh(run_dir)
        return config or TrainConfig(), None
    state = rundir.read_state(run_dir)
    if state.get("completed"):
        raise ConfigError(f"{run_dir}: this run already finished ({state['epoch']} epochs); nothing to resume")
    return load_saved_config(run_dir), state


def _warnings(data: Dataset, train_set: Dataset, val_set: Dataset, val_given: bool, config: TrainConfig,
              warn: Callable[[str], None]) -> list[str]:
    """Everything about the data and settings that trains without error but gives a model that cannot be right."""
    loaded = [*data.warnings, *(val_set.warnings if val_given else [])]  # the loader's (e.g. 0-1 floats rescaled)
    found = loaded + contract_warnings(data) + coverage_warnings(train_set, val_set, val_given) + config_warnings(config)
    for message in found:
        warn(message)
    return found


def _result(run_dir: Path, state: dict, tracker, config: TrainConfig, devices: dict, warnings: list[str],
            started: float) -> TrainResult:
    return TrainResult(run_dir, False, state["epoch"], tracker.epochs_run, state["best_epoch"], state["best_val_accuracy"],
                       time.perf_counter() - started, devices={k: v for k, v in devices.items() if k != "strategy"},
                       warnings=warnings, early_stops=state.get("early_stops", []),
                       final_phase=2 if config.epochs2 else 1)


def _run_phases(model, tracker, train_set, val_set, config, devices, verbose, log) -> None:
    import keras

    steps, batch = pipeline.steps_per_epoch(len(train_set), config.batch_size)
    tracker.images_per_epoch = steps * batch
    augmenter = _augmenter(config)
    weights = pipeline.class_weight_vector(train_set.labels, train_set.num_classes, config.class_weights)
    val_ds = pipeline.eval_dataset(val_set.images, val_set.labels, val_set.num_classes, input_size=config.input_size,
                                   resize=config.resize, batch_size=config.batch_size)
    state, paths = tracker.state, RunDir(tracker.run_dir)
    bounds = [(1, 0, config.epochs1, config.lr1), (2, config.epochs1, config.total_epochs, config.lr2)]
    active = [b for b in bounds if b[2] > b[1]]
    for phase, start, end, lr in bounds:
        if end <= start or state["epoch"] >= end:
            continue
        mid_phase = state["epoch"] > start
        log(_phase_label(active.index((phase, start, end, lr)) + 1, len(active), phase, config, state["epoch"]))
        if not mid_phase and paths.best_weights.exists():
            tracker.load_into_model(model, paths.best_weights)  # phase 2 starts from phase 1's best
        family_of(config.model).module().set_trainable(model, phase, config.unfreeze)
        with devices["strategy"].scope():
            optimizer = make_optimizer(config, lr, total_steps=steps * (end - start), warmup_steps=int(config.warmup_epochs * steps))
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
            model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                          jit_compile=devices["xla"])
            if mid_phase:
                rundir.restore_optimizer(model, model.optimizer, paths.optimizer_state)
        tracker.begin_phase(phase, end, reset_wait=not mid_phase)
        callbacks = [tracker, Progress(config.total_epochs, log)] if verbose else [tracker]
        train_ds = pipeline.train_dataset(
            train_set.images, train_set.labels, train_set.num_classes, input_size=config.input_size, resize=config.resize,
            batch_size=config.batch_size, seed=config.seed, start_epoch=state["epoch"], end_epoch=end,
            augmenter=augmenter, class_weights=weights)
        # Keras prints its progress on stdout; stdout belongs to --json.
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(train_ds, epochs=end, initial_epoch=state["epoch"], steps_per_epoch=steps, validation_data=val_ds,
                      callbacks=callbacks, verbose=2 if verbose else 0, shuffle=False)
        if tracker.interrupted:
            return
        state["epoch"], state["wait"] = end, 0  # early stopping ends the phase
        rundir.save_state(tracker.run_dir, state)
    if paths.best_weights.exists():
        tracker.load_into_model(model, paths.best_weights)


def _phase_label(number: int, count: int, phase: int, config: TrainConfig, done: int) -> str:
    """"phase 1/2: head only, frozen backbone, epochs 1-5 (lr 0.001)": what each stretch of epochs trains."""
    start, end, lr = (0, config.epochs1, config.lr1) if phase == 1 else (config.epochs1, config.total_epochs, config.lr2)
    if phase == 1:
        what = "head only, frozen backbone"
    elif config.weights == "none":
        what = "whole network, from random weights"
    else:
        stages = "all stages" if config.unfreeze == "all" else f"last {config.unfreeze} stage(s)"
        what = f"fine-tuning, backbone unfrozen ({stages})"
    resumed = f", resuming after epoch {done}" if done > start else ""
    epochs = f"epoch {end}" if end == start + 1 else f"epochs {start + 1}-{end}"
    return f"phase {number}/{count}: {what}, {epochs} (lr {lr:g}{resumed})"


def make_optimizer(config: TrainConfig, lr: float, total_steps: int, warmup_steps: int):
    """AdamW or Lion on a cosine schedule with linear warmup; no weight decay on norms, biases, layer scales."""
    import keras

    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(0.0, total_steps - warmup_steps, alpha=config.min_lr_ratio,
                                                          warmup_target=lr, warmup_steps=warmup_steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(lr, total_steps, alpha=config.min_lr_ratio)
    kind = keras.optimizers.Lion if config.optimizer == "lion" else keras.optimizers.AdamW
    optimizer = kind(learning_rate=schedule, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer


def _model_spec(config: TrainConfig, class_names: list[str]) -> dict:
    from toolkit.train.models import model_spec

    return model_spec(config.model, len(class_names), list(class_names), input_size=config.input_size, dropout=config.dropout)


def _build(spec: dict, config: TrainConfig, devices: dict, resume_from: Path | None):
    import keras

    from toolkit.train.models import create_model

    previous = keras.config.dtype_policy()
    try:
        if devices["mixed_precision"]:
            keras.config.set_dtype_policy("mixed_float16")
        with devices["strategy"].scope():
            model = create_model(spec, weights="none" if resume_from else config.weights)
            if resume_from:
                model.load_weights(resume_from)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def _twin(spec: dict):
    """A float32 copy of the network from its family's arch source: what the run dir's weight files are saved from.

    Saving the training model itself would also store its optimizer slots (3x the size) and a mixed-precision model
    if there is one; the export and the submission load these files into exactly this network.
    """
    from toolkit.families import build_model

    return build_model(spec)


def _augmenter(config: TrainConfig):
    from toolkit.train.augment import make_augmenter

    return make_augmenter(config.augment, config.seed, config.invariance, config.holdout_families)


def _describe_augmentation(config: TrainConfig) -> str:
    from toolkit.train.augment import describe

    return describe(config.training_record())


def _devices(config: TrainConfig) -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    capable = bool(gpus) and _compute_capability(gpus[0]) >= 7.0
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto" and capable)
    xla = config.xla == "on" or (config.xla == "auto" and bool(gpus))
    summary = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    summary += ", mixed precision" if mixed else ", float32"
    summary += ", XLA" if xla else ""
    summary += ", MirroredStrategy" if len(gpus) > 1 else ""
    return {"strategy": strategy, "gpus": len(gpus), "mixed_precision": mixed, "xla": xla, "summary": summary}


def _compute_capability(gpu) -> float:
    import tensorflow as tf

    try:
        major, minor = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    except Exception:  # details are best effort; no mixed precision when unknown
        return 0.0
    return major + minor / 10


def _finish(run_dir: Path, spec: dict, val_set: Dataset, state: dict, config: TrainConfig, tracker) -> dict:
    """Rebuild the float32 network from its arch source (as export will), load the best weights, evaluate, write files."""
    from toolkit.families import build_model

    model = build_model(spec)
    model.load_weights(RunDir(run_dir).best_weights)
    val_ds = pipeline.eval_dataset(val_set.images, val_set.labels, val_set.num_classes, input_size=config.input_size,
                                   resize=config.resize, batch_size=config.batch_size)
    probs = np.asarray(model.predict(val_ds.map(lambda x, y: x), verbose=0), dtype=np.float32)
    history = state["history"]
    seconds = sum(history["seconds"])
    extra = {
        "split": "validation",
        "best_epoch": state["best_epoch"],
        "epochs_done": len(history["epoch"]),
        "train_seconds": round(seconds, 2),
        "train_images_per_epoch": tracker.images_per_epoch,
        "stopped_early": recover.final_stop(state.get("early_stops", []), 2 if config.epochs2 else 1),
        "warnings": list(state.get("warnings", [])),
    }
    return rundir.write_results(run_dir, val_set, probs, history, config.probe_size, extra)
