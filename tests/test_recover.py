"""Runs that say what they are: missing classes and unlearnable settings warned, phases labelled, an interrupted run
resumable by the command it prints, its best weights so far exportable with --partial, early stopping named."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from train_data import shapes_dataset
from toolkit.cli import main
from toolkit.data.io import Dataset, save_dataset

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

CBTOOL = [shutil.which("cbtool", path=str(Path(sys.executable).parent)) or shutil.which("cbtool") or "cbtool"]
FAST = ["--model", "convnext_test", "--weights", "none", "--batch-size", "8", "--augment", "none"]


def _lacking_a_class(path: Path) -> Path:
    """Three classes of images under four class names: 'class_3' has no member."""
    data = shapes_dataset(n_per_class=8, num_classes=3, seed=5)
    save_dataset(Dataset(data.images, data.labels, [*data.class_names, "class_3"], data.original_indices), path,
                 schema="generic")
    return path


def _interrupt_after_first_epoch(command: list[str], err_path: Path) -> subprocess.CompletedProcess:
    """Run `command`, and Ctrl-C it once epoch 2 has begun (the signal a terminal sends, not a kill)."""
    with open(err_path, "w") as err:
        # A shell's background job inherits SIGINT ignored; the user's terminal does not.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 500
        while "Epoch 2/" not in err_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, out, err_path.read_text())


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """`cbtool train` from scratch with a fine-tuning lr2 and a frozen phase 1, on data lacking a class, Ctrl-C'd."""
    root = tmp_path_factory.mktemp("recover")
    data = _lacking_a_class(root / "lacking.npz")
    config = root / "fine-tune.toml"
    config.write_text("lr2 = 1e-4\n")
    run = root / "run dir"  # a space: the printed command must quote it
    command = [*CBTOOL, "train", str(data), "--config", str(config), *FAST, "--epochs", "1,5", "-o", str(run)]
    proc = _interrupt_after_first_epoch(command, root / "stderr.txt")
    shutil.copytree(run, root / "snapshot")  # as interrupted: the resume test finishes the run itself
    return root, data, run, proc


def test_interrupt_names_the_epoch_and_the_exact_resume_command(interrupted):
    _, data, run, proc = interrupted
    assert proc.returncode == 130, proc.stderr[-3000:]
    state = json.loads((run / "state" / "state.json").read_text())
    done = state["epoch"]
    assert done >= 1 and not state["completed"]
    command = f"cbtool train {data} -o {shlex.quote(str(run))} --resume"
    assert f"error: interrupted after epoch {done} of 6: epochs 1-{done} are saved in {run}" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"continue with: {command}"), proc.stderr[-600:]


def test_warnings_phase_labels_and_the_first_epoch_header(interrupted):
    _, _, _, proc = interrupted
    err = proc.stderr
    assert "warning: no image of class 'class_3' in the training data (1 of 4 classes)" in err
    assert "warning: no image of class 'class_3' in the held-out validation split (1 of 4 classes)" in err
    assert "warning: weights = none with epochs1 = 1: phase 1 trains only the head on a random frozen backbone" in err
    assert "warning: weights = none with lr2 = 0.0001: a fine-tuning rate" in err
    assert "phase 1/2: head only, frozen backbone, epoch 1 (lr 0.001)" in err
    assert "phase 2/2: whole network, from random weights, epochs 2-6 (lr 0.0001)" in err
    # Keras printed no header for a one-epoch fit() and counted phase 1 on its own; the run's count is 6
    assert err.index("phase 1/2") < err.index("Epoch 1/6\n") < err.index("phase 2/2") < err.index("Epoch 2/6\n")


def test_unfinished_run_exports_and_builds_only_with_partial(interrupted, tmp_path):
    root, _, run, _ = interrupted
    snapshot = root / "snapshot"
    state = json.loads((snapshot / "state" / "state.json").read_text())
    result = CliRunner().invoke(main, ["export", str(snapshot), "-o", str(tmp_path / "e"), "--json"])
    assert result.exit_code == 1
    message = json.loads(result.stdout)["error"]["message"]
    assert "unfinished" in message and "--partial" in message and "--resume" in message and "missing" not in message
    result = CliRunner().invoke(main, ["export", str(snapshot), "-o", str(tmp_path / "e"), "--partial", "--json"])
    assert result.exit_code == 0, result.output
    partial = {"epochs_done": state["epoch"], "best_epoch": state["best_epoch"],
               "best_val_accuracy": state["best_val_accuracy"]}
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["partial"] == partial
    with np.load(tmp_path / "e" / "probe.npz") as probe:  # written from the best weights so far
        assert probe["probs"].shape == (len(probe["images"]), 4)
    result = CliRunner().invoke(main, ["build-submission", str(snapshot), "-o", str(tmp_path / "s.zip"),
                                       "--profile", "local", "--partial", "--json"])
    # the zip is written either way; its check may fail on the missing class (a grader scoring 8 classes)
    assert result.exit_code == (0 if json.loads(result.stdout)["check"]["ok"] else 1), result.output
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert json.loads(zf.read("manifest.json"))["partial"] == partial
    result = CliRunner().invoke(main, ["build-submission", str(snapshot), "-o", str(tmp_path / "t.zip"), "--profile", "local"])
    assert result.exit_code == 1 and "--partial" in result.stderr and not (tmp_path / "t.zip").exists()


def test_the_printed_command_resumes_and_the_result_carries_the_warnings(interrupted):
    root, _, run, proc = interrupted
    command = shlex.split(proc.stderr.rstrip().rsplit("continue with: ", 1)[1])
    assert command[:2] == ["cbtool", "train"]
    done = subprocess.run([*CBTOOL, *command[1:], "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)
    assert payload["completed"] and payload["epochs_done"] == 6
    assert any("'class_3'" in w for w in payload["warnings"]) and any("lr2 = 0.0001" in w for w in payload["warnings"])
    assert payload["chance_level"] == pytest.approx(1 / 3, abs=1e-6)  # 3 validation images, one per present class
    assert payload["near_chance"] == (payload["accuracy"] < 1.5 * payload["chance_level"])
    assert json.loads((run / "metrics.json").read_text())["warnings"] == payload["warnings"]


def test_early_stopping_is_reported_as_such(tmp_path):
    data = save_dataset(shapes_dataset(n_per_class=6, num_classes=3, seed=1), tmp_path / "d.npz", schema="generic")
    config = tmp_path / "c.toml"
    config.write_text("patience = 1\nlr2 = 0.0\nwarmup_epochs = 0.0\n")  # nothing learns: accuracy never improves
    result = CliRunner().invoke(main, ["train", str(data), "--config", str(config), *FAST, "--epochs", "8",
                                       "-o", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "stopped early at epoch 2 of 8 (patience 1); best epoch 1" in result.stdout
    assert "(best epoch 1 of 2," in result.stdout  # not "of 8": six epochs never ran
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stopped_early"] == {"phase": 2, "epoch": 2, "of": 8, "patience": 1, "best_epoch": 1}
    assert metrics["near_chance"] and "near chance" in result.stdout  # an unlearned model says so


def test_a_class_count_the_layout_grader_does_not_score_is_warned():
    from toolkit.train.fit import contract_warnings

    data = shapes_dataset(n_per_class=1, num_classes=7)
    found = contract_warnings(Dataset(data.images, data.labels, data.class_names, data.original_indices, "an2dl2024", "x.npz"))
    assert len(found) == 1 and "7 classes" in found[0] and "an2dl-2024" in found[0] and "scores 8" in found[0]
    assert contract_warnings(data) == []  # a generic file names no grader


def test_a_val_file_lacking_a_class_is_named_as_such():
    from toolkit.train.fit import coverage_warnings

    data = shapes_dataset(n_per_class=2, num_classes=3)
    val = data.subset(np.flatnonzero(data.labels != 1))
    found = coverage_warnings(data, val, val_given=True)
    assert found == ["no image of class 'class_1' in --val (1 of 3 classes): their accuracy is never measured, and the "
                     "validation accuracy overstates the model"]
    assert coverage_warnings(data, data, val_given=True) == []
