"""Runs you can recover: what an interrupted or unfinished run says, the `--resume` command that continues it, the
best weights saved so far for `export --partial`, and how early stopping is reported.

TensorFlow-free: export and build-submission read a run's state through here.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.errors import EXIT_INTERRUPTED, CbtoolError


class TrainingInterrupted(CbtoolError):
    """Ctrl-C during `train`: the run dir holds every finished epoch; the message says how to continue. Exit 130."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"

    def __init__(self, run_dir: Path, state: dict, total_epochs: int):
        self.epochs_done, self.best_epoch = int(state.get("epoch") or 0), state.get("best_epoch")
        self.command = state.get("resume_command") or f"cbtool train DATA -o {shlex.quote(str(run_dir))} --resume"
        saved = (f"epochs 1-{self.epochs_done} are saved in {run_dir} (best epoch {self.best_epoch}, validation "
                 f"accuracy {state.get('best_val_accuracy') or 0:.4f})" if self.epochs_done else
                 f"no epoch had finished; {run_dir} holds the setup")
        super().__init__(f"interrupted after epoch {self.epochs_done} of {total_epochs}: {saved}; continue with: "
                         f"{self.command}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "epochs_done": self.epochs_done, "best_epoch": self.best_epoch,
                "resume_command": self.command}


def resume_command(data: str | None, val: str | None, fold: str | None, run_dir: str, allow_pickle: bool) -> str:
    """The exact `cbtool train ... --resume` that continues a run started with these inputs (settings come from the
    run's saved config, so none are repeated)."""
    words = ["cbtool", "train"]
    words += ["--fold", str(fold)] if fold else [str(data)] + (["--val", str(val)] if val else [])
    words += ["-o", str(run_dir), "--resume"] + (["--allow-pickle"] if allow_pickle else [])
    return shlex.join(words)


def read_state(run_dir: Path) -> dict | None:
    """The run's saved training state, or None when there is none (not a run dir, or a run from elsewhere)."""
    path = RunDir(run_dir).state
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_unfinished(run_dir: Path) -> bool:
    state = read_state(run_dir)
    return state is not None and not state.get("completed")


def unfinished_message(run_dir: Path, state: dict, flag: str = "--partial") -> str:
    """Why an unfinished run cannot be exported as is, and the two ways on: finish it, or take the best so far."""
    best = state.get("best_epoch")
    so_far = f"best epoch {best} of {state.get('epoch', 0)} done" if best else "no epoch finished yet"
    command = state.get("resume_command") or f"cbtool train DATA -o {shlex.quote(str(run_dir))} --resume"
    return (f"{run_dir}: the training run is unfinished ({so_far}); finish it with `{command}`, or pass {flag} to use "
            "the best weights saved so far")


def probe_inputs_path(run_dir: Path) -> Path:
    """The probe images and labels a run saves at its start (state/probe.npz), so a partial export can check itself."""
    paths = RunDir(run_dir)
    return paths.state_dir / paths.probe.name


def partial_record(state: dict) -> dict:
    """The manifests' `partial` block: how far the run got and which epoch's weights are used."""
    return {"epochs_done": int(state.get("epoch") or 0), "best_epoch": state.get("best_epoch"),
            "best_val_accuracy": state.get("best_val_accuracy")}


def read_probe_inputs(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = probe_inputs_path(run_dir)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def early_stop_record(phase: int, epoch: int, of: int, patience: int, best_epoch: int | None) -> dict:
    return {"phase": phase, "epoch": epoch, "of": of, "patience": patience, "best_epoch": best_epoch}


def describe_early_stop(stop: dict, last_phase: bool) -> str:
    """"stopped early at epoch 17 of 201 (patience 5); best epoch 12" (phase 1's stop names its phase)."""
    prefix = "stopped early" if last_phase else f"phase {stop['phase']} stopped early"
    return (f"{prefix} at epoch {stop['epoch']} of {stop['of']} (patience {stop['patience']}); "
            f"best epoch {stop['best_epoch']}")


def final_stop(stops: list[dict], final_phase: int) -> dict | None:
    """The early stop that ended the run (in its last phase), or None when the run ran all its epochs."""
    return stops[-1] if stops and stops[-1]["phase"] == final_phase else None
