"""Per-epoch bookkeeping of a training run (a Keras callback) and its progress lines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.train import recover, rundir


def Progress(total: int, log: Callable[[str], None]):
    """Keras' per-epoch progress line under our own `Epoch i/N` header, N counting the whole run's epochs.

    Keras heads each epoch with `Epoch i/E` where E is the `epochs` of this fit() call, and prints no header when
    that is 1: a 1-epoch phase 1 (`--epochs 5` = 1 + 4) lost its `Epoch 1/5`, and phase 1's header said 1/2, not 1/10.
    """
    import keras

    class Progress(keras.callbacks.ProgbarLogger):
        def on_epoch_begin(self, epoch, logs=None):
            self.epochs = 1  # silences Keras' own header; nothing else reads it
            super().on_epoch_begin(epoch, logs)
            if self.verbose:
                log(f"Epoch {epoch + 1}/{total}")

    return Progress()


def Tracker(run_dir: Path, state: dict, patience: int, stop_after_epochs: int | None, twin):
    """A keras Callback (made here so importing this module does not import Keras); see `_TrackerMixin`."""
    import keras

    cls = type("Tracker", (_TrackerMixin, keras.callbacks.Callback), {})
    return cls(run_dir, state, patience, stop_after_epochs, twin)


class _TrackerMixin:
    """Per epoch: history, best weights on validation accuracy, resumable state, early stopping, test interrupts."""

    def __init__(self, run_dir: Path, state: dict, patience: int, stop_after_epochs: int | None, twin):
        super().__init__()
        self.run_dir, self.state, self.patience, self.stop_after = run_dir, state, patience, stop_after_epochs
        self.twin = twin
        self.epochs_run, self.interrupted, self.phase, self.end, self.images_per_epoch = 0, False, 1, 0, 0
        self._t0 = 0.0

    def begin_phase(self, phase: int, end: int, reset_wait: bool) -> None:
        self.phase, self.end = phase, end
        self.state["phase"] = phase
        if reset_wait:
            self.state["wait"] = 0

    def load_into_model(self, model, path: Path) -> None:
        """Load a run-dir weight file into the (compiled) training model, through the float32 twin."""
        self.twin.load_weights(path)
        model.set_weights(self.twin.get_weights())

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs, state, history = logs or {}, self.state, self.state["history"]
        val_acc = float(logs.get("val_accuracy", 0.0))
        row = {"epoch": epoch + 1, "phase": self.phase, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
               "val_loss": logs.get("val_loss"), "val_accuracy": val_acc, "lr": _current_lr(self.model.optimizer),
               "seconds": round(time.perf_counter() - self._t0, 3)}
        for key in rundir.HISTORY_KEYS:
            value = row[key]
            history[key].append(float(value) if isinstance(value, (float, np.floating)) or hasattr(value, "numpy") else value)
        self.twin.set_weights(self.model.get_weights())
        paths = RunDir(self.run_dir)
        if state["best_val_accuracy"] is None or val_acc > state["best_val_accuracy"]:
            state["best_val_accuracy"], state["best_epoch"], state["wait"] = val_acc, epoch + 1, 0
            rundir.save_weights(self.twin, paths.best_weights)
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        rundir.save_weights(self.twin, paths.last_weights)
        rundir.save_optimizer(self.model.optimizer, paths.optimizer_state)
        rundir.save_state(self.run_dir, state)
        self.epochs_run += 1
        if self.patience and state["wait"] >= self.patience and epoch + 1 < self.end:
            self.model.stop_training = True
            stop = recover.early_stop_record(self.phase, epoch + 1, self.end, self.patience, state["best_epoch"])
            state.setdefault("early_stops", []).append(stop)
            rundir.save_state(self.run_dir, state)
        if self.stop_after is not None and self.epochs_run >= self.stop_after:
            self.interrupted = True
            self.model.stop_training = True


def _current_lr(optimizer) -> float | None:
    import keras

    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # a wrapped optimizer may not expose it; the history just lacks the value
        return None
