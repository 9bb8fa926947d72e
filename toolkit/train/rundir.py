"""Writing and reading a training run dir, and the final evaluation that fills its metrics, plots and probe.

The layout (the contract with export and simulate) is `toolkit.artifacts.RunDir`: the config, spec, classes and
preprocessing files, the best weights, history, metrics, the two plots, the probe, the out-of-fold predictions
(oof.npz, the whole validation set) and state/ (last weights, optimizer slots, training state) for --resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.errors import ConfigError
from toolkit.fsutil import atomic_path, write_json

HISTORY_KEYS = ("epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def check_fresh(run_dir: Path) -> None:
    """Refuse to start a new run on top of an existing one."""
    paths = RunDir(run_dir)
    if paths.config.exists() or paths.state.exists():
        raise ConfigError(f"{run_dir} already holds a training run; pass --resume to continue it, or choose another -o")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a directory")


def write_setup(run_dir: Path, config, spec: dict) -> None:
    """The config, model spec, classes and preprocessing files: everything known before training."""
    from toolkit.provenance import preprocessing_sha256

    paths = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.config, config.to_dict())
    write_json(paths.model_spec, spec)
    write_json(paths.classes, {"class_names": list(spec["class_names"])})
    write_json(
        paths.preprocessing,
        {"input_size": config.input_size, "resize": config.resize, "source_sha256": preprocessing_sha256()},
    )


def new_state(data_sha256: str) -> dict:
    return {
        "epoch": 0,
        "phase": 1,
        "wait": 0,
        "best_val_accuracy": None,
        "best_epoch": None,
        "data_sha256": data_sha256,
        "completed": False,
        "history": {key: [] for key in HISTORY_KEYS},
    }


def read_state(run_dir: Path) -> dict:
    path = RunDir(run_dir).state
    if not path.is_file():
        raise ConfigError(f"{path}: no saved training state to resume from (was the run started with cbtool train -o {run_dir}?)")
    return json.loads(path.read_text(encoding="utf-8"))


def save_state(run_dir: Path, state: dict) -> None:
    write_json(RunDir(run_dir).state, state)


def save_weights(model, path: Path) -> None:
    """model.save_weights, atomically (Keras insists on the .weights.h5 suffix, so the temp name keeps it)."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def save_optimizer(optimizer, path: Path) -> None:
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def restore_optimizer(model, optimizer, path: Path) -> None:
    """Build the optimizer for the model's trainable variables, then load its saved slots and step count."""
    optimizer.build(model.trainable_variables)
    with np.load(path) as saved:
        arrays = [saved[k] for k in sorted(saved.files)]
    variables = optimizer.variables
    if len(arrays) != len(variables) or any(tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)):
        raise ConfigError(f"{path}: the saved optimizer state does not match this model; the run cannot be resumed")
    for var, value in zip(variables, arrays):
        var.assign(value)


def probe_indices(labels: np.ndarray, k: int) -> np.ndarray:
    """Up to k validation rows, taken round-robin over classes so the probe covers every class it can."""
    labels = np.asarray(labels)
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < min(k, len(labels)):
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(int(queue.pop(0)))
    return np.array(picked, dtype=np.int64)


def write_probe_inputs(path: Path, val, probe_size: int) -> None:
    """The probe's images and labels, saved when a run starts: a partial export checks itself on them."""
    idx = probe_indices(val.labels, probe_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=val.images[idx], labels=val.labels[idx].astype(np.int64))


def chance_fields(labels: np.ndarray, num_classes: int, accuracy: float) -> tuple[dict, list[str]]:
    """The metrics' chance_level and near_chance, and the warning a near-chance validation accuracy gets."""
    from toolkit.results import chance_level, chance_warning

    chance = chance_level(labels, num_classes)
    warning = chance_warning("validation accuracy", accuracy, chance)
    return {"chance_level": round(chance, 6), "near_chance": warning is not None}, [warning] if warning else []


def write_results(run_dir: Path, val, probs: np.ndarray, history: dict, probe_size: int, extra: dict) -> dict:
    """Metrics, history, probe and the two plots, from the validation softmax of the best model."""
    from toolkit.train.metrics import classification_metrics, plot_confusion_matrix, plot_learning_curves

    predictions = probs.argmax(axis=1)
    metrics = classification_metrics(val.labels, predictions, val.class_names)
    metrics.update(extra)
    chance, warning = chance_fields(val.labels, val.num_classes, metrics["accuracy"])
    metrics.update(chance, warnings=list(extra.get("warnings", [])) + warning)
    paths = RunDir(run_dir)
    write_json(paths.metrics, metrics)
    write_json(paths.history, history)
    idx = probe_indices(val.labels, probe_size)
    with atomic_path(paths.probe, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=val.images[idx], labels=val.labels[idx].astype(np.int64), probs=probs[idx].astype(np.float32))
    write_oof(paths.oof, val, probs)
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), val.class_names, paths.confusion_png,
                          title=f"validation, accuracy {metrics['accuracy']:.3f}")
    phase1 = sum(1 for p in history.get("phase", []) if p == 1)
    plot_learning_curves(history, paths.curves_png, phase_boundary=phase1 if 0 < phase1 < len(history["phase"]) else None)
    return metrics


def write_oof(path: Path, val, probs: np.ndarray) -> None:
    """Out-of-fold predictions: every validation row's original index, label and softmax (what `cv-report` pools)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, original_indices=val.original_indices.astype(np.int64),
                     labels=val.labels.astype(np.int64), probs=probs.astype(np.float32))
