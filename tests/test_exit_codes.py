"""One exit-code rule, through the installed entry point: a bad option value (or a missing input file) exits 2 with one
line, or one JSON document of kind "usage"; the README's table says the same; TensorFlow's log lines stay hidden."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from toolkit import errors

CBTOOL = Path(sys.executable).with_name("cbtool")  # the installed entry point of this venv


# (command line, a fragment the message must hold, a pytest mark for a known gap: none today). Every other input on each
# line is valid, so the named fault is the only one. {npz} a valid npz, {zip} a zip with a model.py, {dir} an empty dir.
CASES = [
    ("check {zip} --profile an2dl-2042", "did you mean an2dl-2024?", None),
    ("check {zip} --profile my-chalenge --profiles-file {toml}", "did you mean my-challenge?", None),
    ("check {zip} --profiles-file {toml} --profile my-chalenge", "did you mean my-challenge?", None),
    ("check {missing}.zip", "does not exist", None),
    ("simulate {zip} --data {npz} --profile an2dl-2042", "did you mean an2dl-2024?", None),
    ("simulate {zip} --data {npz} --time-limit 0", "--time-limit", None),
    ("simulate {zip} --data {npz} --memory-limit 4X", "--memory-limit", None),
    ("simulate {zip} --data {npz} --class-map nonsense", "--class-map", None),
    ("simulate {missing}.zip --data {npz}", "missing", None),
    ("simulate {zip} --data {missing}.npz", "missing", None),
    ("predict {zip} --data {npz} -o {out}.csv --profile an2dl-2042", "did you mean an2dl-2024?", None),
    ("predict {zip} --data {npz} -o {out}.csv --batch-size 0", "--batch-size", None),
    ("predict {zip} --data {missing}.npz -o {out}.csv", "missing", None),
    ("validate-preprocessing {zip} --run {dir} --profile an2dl-2042", "did you mean an2dl-2024?", None),
    ("validate-preprocessing {zip} --run {dir} --images 0", "--images", None),
    ("validate-preprocessing {zip} --preprocess scale:x --data {npz}", "scale:x", None),
    ("build-submission {dir} -o {out}.zip --profile an2dl-2042", "did you mean an2dl-2024?", None),
    ("build-submission {dir} -o {out}.zip --format onnnx", "did you mean onnx?", None),
    ("build-submission {dir} -o {out}.zip --tta flips", "--tta", None),
    ("runtime create an2dl-2042", "did you mean an2dl-2024?", None),
    ("runtime create my-chalenge --profiles-file {toml}", "did you mean my-challenge?", None),
    ("export {dir} -o {out} --format onnnx", "did you mean onnx?", None),
    ("export {missing} -o {out}", "missing", None),
    ("train {npz} -o {out} --epochs 0", "epoch", None),
    ("train --fold {missing} -o {out}", "missing", None),
    ("clean {npz} -o {out}.npz --conflicts dorp", "did you mean drop?", None),
    ("train {npz} -o {out} --batch-size 0", "batch_size", None),
    ("train {npz} -o {out} --augment nosuch", "augment", None),
    ("train {npz} -o {out} --model convnext_tny", "did you mean convnext_tiny?", None),
    ("train {npz} -o {out} --optimizer adamx", "--optimizer", None),
    ("train {missing}.npz -o {out}", "missing", None),
    ("inspect {missing}.npz", "missing", None),
    ("clean {missing}.npz -o {out}.npz", "missing", None),
    ("clean {npz} -o {out}.npz --conflicts vote", "--conflicts", None),
    ("clean {npz} -o {out}.npz --threshold -1", "threshold", None),
    ("clean {npz} -o {out}.npz --drop-outliers -1", "--drop-outliers", None),
    ("split {missing}.npz -o {out}", "missing", None),
    ("split {npz} -o {out} --val 1.5", "val", None),
    ("split {npz} -o {out} --folds 1", "--folds", None),
    ("demo-data -o {out}.npz --n 10", "--n", None),
    ("cv-report {missing}", "missing", None),
    ("no-such-command", "No such command", None),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Valid inputs for every placeholder, so each case's named fault is its only one."""
    root = tmp_path_factory.mktemp("exit_codes")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", images=rng.integers(0, 256, (16, 96, 96, 3), dtype=np.uint8), labels=(np.arange(16) % 8).reshape(-1, 1))
    with zipfile.ZipFile(root / "s.zip", "w") as zf:
        zf.writestr("model.py", "class Model:\n    def __init__(self):\n        pass\n\n    def predict(self, X):\n        return X[:, 0, 0, 0]\n")
    (root / "p.toml").write_text("[profiles.my-challenge]\ncontract = 2024\n")
    (root / "empty").mkdir()
    return {"npz": str(root / "d.npz"), "zip": str(root / "s.zip"), "dir": str(root / "empty"), "toml": str(root / "p.toml"),
            "missing": str(root / "missing"), "out": str(root / "out")}


def _cbtool(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CBTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _params():
    for line, fragment, mark in CASES:
        yield pytest.param(line, fragment, id=re.sub(r"[{}]", "", line), marks=[mark] if mark else [])


@pytest.mark.parametrize("line, fragment", list(_params()))
def test_bad_option_value_exits_2_with_one_line(inputs, line, fragment):
    proc = _cbtool(line.format(**inputs).split())
    assert proc.returncode == errors.EXIT_USAGE, proc.stderr[-800:]
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert fragment in proc.stderr and "No such option" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("line, fragment", list(_params()))
def test_bad_option_value_is_one_usage_document_under_json(inputs, line, fragment):
    proc = _cbtool([*line.format(**inputs).split(), "--json"])
    assert proc.returncode == errors.EXIT_USAGE, proc.stdout[-800:]
    error = json.loads(proc.stdout)["error"]  # the whole of stdout is one document
    assert error["kind"] == "usage" and fragment in error["message"], error


@pytest.mark.parametrize("flags", [["--json"], ["--json", "--quiet"], ["--debug", "--json"]])
def test_global_flags_may_come_before_the_command(inputs, flags):
    proc = _cbtool([*flags, "inspect", inputs["npz"]])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["n"] == 16
    nested = _cbtool([*flags, "runtime", "create", "an2dl-2042"])
    assert nested.returncode == 2 and json.loads(nested.stdout)["error"]["kind"] == "usage"


def test_group_flags_reach_the_command(inputs):
    chatty = _cbtool(["clean", inputs["npz"], "--dry-run"])
    assert chatty.returncode == 0 and "perceptual hashes" in chatty.stderr  # progress on stderr by default
    quiet = _cbtool(["-q", "clean", inputs["npz"], "--dry-run"])
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout  # -q before the name quiets it
    debug = _cbtool(["--debug", "check", inputs["zip"], "--profile", "an2dl-2042"])
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # --debug before the name: the traceback


def _readme_exit_codes() -> dict[int, str]:
    commands = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("\n### ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| `(\d+)` \| (.+?) \|$", commands, flags=re.M)}


def test_readme_exit_code_table_matches_the_program():
    documented = _readme_exit_codes()
    codes = {errors.EXIT_OK, errors.EXIT_ERROR, errors.EXIT_USAGE, errors.EXIT_SUBMISSION_FAILED, errors.EXIT_INTERRUPTED}
    assert set(documented) == codes, documented
    assert "usage" in documented[errors.EXIT_USAGE] and "option" in documented[errors.EXIT_USAGE]
    assert "submission" in documented[errors.EXIT_SUBMISSION_FAILED]
    assert errors.UsageError.exit_code == errors.EXIT_USAGE and errors.SubmissionFailed.exit_code == errors.EXIT_SUBMISSION_FAILED
    helped = _cbtool(["--help"]).stdout
    for code in codes:
        assert re.search(rf"\b{code} ", helped), f"`cbtool --help` does not list exit code {code}"
