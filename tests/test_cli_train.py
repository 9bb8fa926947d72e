"""`cbtool train` end to end: clean JSON on stdout, progress on stderr, config file + flags, resume through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from train_data import shapes_dataset
from toolkit.cli import main
from toolkit.data.io import save_dataset

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

# The installed entry point, as a user runs it.
CBTOOL = [shutil.which("cbtool", path=str(Path(sys.executable).parent)) or shutil.which("cbtool") or "cbtool"]
FAST = ["--model", "convnext_test", "--weights", "none", "--batch-size", "16", "--augment", "basic"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    save_dataset(shapes_dataset(n_per_class=10, num_classes=3, seed=5), path, schema="generic")
    return path


def test_json_stdout_is_one_document_and_progress_goes_to_stderr(npz, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([*CBTOOL, "train", str(npz), *FAST, "--epochs", "2", "-o", str(run), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(proc.stdout)
    assert payload["completed"] is True and payload["epochs_done"] == 2
    assert 0.0 <= payload["accuracy"] <= 1.0 and set(payload["per_class"]) == {"class_0", "class_1", "class_2"}
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == payload["accuracy"]
    # --json hides progress; without it Keras' epoch lines go to stderr, never stdout
    proc = subprocess.run([*CBTOOL, "train", str(npz), *FAST, "--epochs", "1", "-o", str(tmp_path / "run2")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "val_accuracy" in proc.stderr and "val_accuracy" not in proc.stdout
    assert proc.stdout.startswith("validation accuracy ")


def test_config_file_and_flags(npz, tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text('model = "convnext_test"\nweights = "none"\nbatch_size = 8\nlabel_smoothing = 0.0\nepochs = [0, 3]\n')
    run = tmp_path / "run"
    val = tmp_path / "val.npz"
    save_dataset(shapes_dataset(n_per_class=3, num_classes=3, seed=9), val, schema="generic")
    result = CliRunner().invoke(main, ["train", str(npz), "--val", str(val), "--config", str(cfg), "--batch-size", "16",
                                       "--epochs", "1", "--seed", "3", "-o", str(run), "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["batch_size"] == 16 and saved["seed"] == 3  # flags win
    assert saved["label_smoothing"] == 0.0 and saved["model"] == "convnext_test"  # the file's values stay
    assert (saved["epochs1"], saved["epochs2"]) == (0, 1)
    assert json.loads(result.stdout)["epochs_done"] == 1
    assert json.loads((run / "metrics.json").read_text())["n"] == 9  # scored on --val, all 30 images trained on


def test_errors_are_one_line_and_exit_1(npz, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    result = CliRunner().invoke(main, ["train", str(npz), "--config", str(bad), "-o", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError" and "bad.toml" in error["message"] and "'epochz'" in error["message"]
    result = CliRunner().invoke(main, ["train", str(npz), "--resume", "--model", "convnext_tiny", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--resume continues with the saved" in result.stderr  # options that clash: usage
    result = CliRunner().invoke(main, ["train", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "does not exist" in result.stderr  # a path option that names nothing: usage


def test_bad_flag_values_exit_2_and_bad_file_values_exit_1(npz, tmp_path):
    for flags, message in ((["--epochs", "0"], "at least one epoch"), (["--epochs", "two"], "--epochs: expected N"),
                           (["--batch-size", "0"], "'batch_size' must be >= 1"),
                           (["--weights", "imagnet"], "did you mean imagenet?")):
        result = CliRunner().invoke(main, ["train", str(npz), *flags, "-o", str(tmp_path / "r"), "--json"])
        assert result.exit_code == 2, (flags, result.output)
        error = json.loads(result.stdout)["error"]
        assert error["kind"] == "usage" and message in error["message"], (flags, error)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 0\n")
    result = CliRunner().invoke(main, ["train", str(npz), "--config", str(bad), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and "bad.toml: at least one epoch" in result.stderr
    assert not (tmp_path / "r").exists()


def test_resume_through_the_cli(npz, tmp_path):
    from toolkit.data.io import load_dataset
    from toolkit.train.config import resolve_config
    from toolkit.train.fit import train

    run = tmp_path / "run"
    config = resolve_config(overrides={"model": "convnext_test", "weights": "none", "epochs": "3", "batch_size": 16})
    first = train(load_dataset(npz), None, config, run, verbose=False, stop_after_epochs=1)  # as if killed after epoch 1
    assert first.epochs_done == 1 and not (run / "metrics.json").exists()
    result = CliRunner().invoke(main, ["train", str(npz), "--resume", "-o", str(run), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["completed"] and payload["epochs_done"] == 3 and payload["epochs_this_run"] == 2
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_unloadable_weights_leave_no_run_dir_behind(npz, tmp_path):
    """The weights are fetched before the run dir is written, so the corrected command is not told to --resume."""
    bad = tmp_path / "junk.weights.h5"
    bad.write_bytes(b"not an h5 file")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(npz), "--model", "convnext_test", "--weights", str(bad),
                                       "--epochs", "1", "-o", str(out), "--quiet"])
    assert result.exit_code == 1 and "junk.weights.h5" in result.output and "could not load" in result.output
    assert not out.exists()
