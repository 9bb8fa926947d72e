"""Contracts as data: a grader defined only in a profile TOML, end to end; profile-file validation; one-line errors.

The end-to-end test builds the same convnext_test run for an2dl-2024 and for a TOML-only contract (class
`Predictor`, no constructor arguments, float32 numpy input, no `metadata`, `fit` called before `predict`, the
an2dl-2024 runtime's packages), checks both, and simulates both in the pinned TF 2.17 / Keras 3.4.1 venv: the
scores must be identical.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from submission_data import shared_export
from toolkit.cli import main
from toolkit.contract import AN2DL_2023, AN2DL_2024
from toolkit.errors import RuntimeProfileError
from toolkit.runtime.profiles import get_profile, load_user_profiles

CHALLENGE = """
[profiles.my-challenge]
packages = ["tensorflow-cpu==2.17.0", "keras==3.4.1", "numpy<2"]
[profiles.my-challenge.contract]
class_name = "Predictor"
init_args = []
input = "numpy"
dtypes = ["float32"]
metadata = false
cwd = "program"
methods = ["fit", "predict"]
[profiles.twin-2024]
packages = ["tensorflow-cpu==2.17.0", "keras==3.4.1", "numpy<2"]
[profiles.twin-2024.contract]   # an2dl-2024's contract without its class count and image size
class_name = "Model"
dtypes = ["uint8", "float32"]
cwd = "submission"
"""


def _cli(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*args, "--json"])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not one JSON document (exit {result.exit_code}):\n{result.output}") from None


def _heldout(path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(3)
    np.savez(path, images=rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8), labels=(np.arange(n) % 3).reshape(-1, 1))
    return path


def test_the_two_an2dl_contracts_are_instances_of_one_record():
    assert (AN2DL_2024.class_name, AN2DL_2024.init_args, AN2DL_2024.metadata, AN2DL_2024.cwd) == ("Model", (), False, "submission")
    assert (AN2DL_2023.class_name, AN2DL_2023.init_args, AN2DL_2023.metadata, AN2DL_2023.input) == ("model", ("path",), True, "tensor")
    assert get_profile("an2dl-2024").contract is AN2DL_2024 and get_profile("an2dl-2023").contract is AN2DL_2023
    assert (AN2DL_2024.num_classes, AN2DL_2023.num_classes) == (8, 2)  # blood cells; healthy/unhealthy leaves
    assert AN2DL_2024.image_shape == AN2DL_2023.image_shape == (96, 96, 3)


def test_a_toml_contract_sets_the_class_count_and_image_shape(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[profiles.big.contract]\nnum_classes = 5\nimage_shape = [128, 128, 3]\n")
    contract = load_user_profiles(path)["big"].contract
    assert (contract.num_classes, contract.image_shape) == (5, (128, 128, 3))
    assert contract.to_dict()["image_shape"] == [128, 128, 3]


def test_a_toml_only_contract_builds_checks_and_scores_like_an2dl_2024(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(CHALLENGE)
    profile = load_user_profiles(profiles)["my-challenge"]
    if get_profile("an2dl-2024").packages != profile.packages:  # pragma: no cover - keep the venv shared
        pytest.fail("the test profile must pin the an2dl-2024 packages so both use one runtime venv")
    try:
        from toolkit.runtime.sandbox import runtime_python

        runtime_python(profile)
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"the pinned runtime is unavailable: {exc}")
    _, export = shared_export()
    zips = {name: tmp_path / f"{name}.zip" for name in ("twin-2024", "my-challenge")}
    for name, path in zips.items():
        code, built = _cli("build-submission", str(export), "-o", str(path), "--profile", name, "--profiles-file", str(profiles))
        assert code == 0 and built["check"]["ok"], built
    with zipfile.ZipFile(zips["my-challenge"]) as zf:
        assert zf.namelist() == ["model.py", "weights.npz", "manifest.json"]  # no `metadata`: the contract says so
        tree = ast.parse(zf.read("model.py"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert set(classes) == {"Predictor"}
    assert {"__init__", "fit", "predict"} <= {f.name for f in classes["Predictor"].body if isinstance(f, ast.FunctionDef)}
    code, checked = _cli("check", str(zips["my-challenge"]), "--profile", "my-challenge", "--profiles-file", str(profiles))
    assert code == 0 and checked["ok"] and checked["contract"] == "my-challenge", checked
    # the same zip is wrong for an2dl-2024: its class is not `Model`
    code, wrong = _cli("check", str(zips["my-challenge"]), "--profile", "an2dl-2024")
    assert code == 1 and [i["code"] for i in wrong["issues"]] == ["class_name"]
    data = _heldout(tmp_path / "heldout.npz")
    scored = {}
    for name, path in zips.items():
        code, result = _cli("simulate", str(path), "--data", str(data), "--profile", name, "--profiles-file", str(profiles))
        assert code == 0 and result["status"] == "ok", result
        scored[name] = result
    ours, theirs = scored["my-challenge"], scored["twin-2024"]
    assert ours["scores"]["accuracy"] == theirs["scores"]["accuracy"]
    assert ours["scores"]["confusion_matrix"] == theirs["scores"]["confusion_matrix"]
    assert list(ours["scores_by_input"]) == ["float32"] and set(theirs["scores_by_input"]) == {"uint8", "float32"}
    assert ours["timing"]["fit_s"] is not None and theirs["timing"]["fit_s"] is None  # fit was called, before predict
    assert any("fit(X, y)" in w for w in ours["warnings"])


def test_a_submission_without_the_contracts_fit_fails_check(tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(CHALLENGE)
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", "class Predictor:\n    def predict(self, X):\n        return X\n")
    code, checked = _cli("check", str(path), "--profile", "my-challenge", "--profiles-file", str(profiles))
    assert code == 1
    assert [(i["code"], i["symbol"], i["expected"]) for i in checked["issues"]] == [("signature", "Predictor.fit", "fit(self, X, y)")]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[profiles]\nfoo = 3\n", ["profile 'foo'", "expected a [profiles.foo] table", "int 3"]),
        ("[profiles.x]\ncontract = 2025\n", ["'contract' must be 2023, 2024", "2025"]),
        ("[profiles.x]\ncontract = 2024\ntime_limit_s = 'soon'\n", ["field 'time_limit_s' must be float", "str 'soon'"]),
        ("[profiles.x]\ncontract = 2024\ntimelimit = 3\n", ["unknown field 'timelimit'", "time_limit_s"]),
        ("[profiles.x.contract]\nclass_name = 'P'\ncwd = 'home'\n", ["contract: field 'cwd' must be", "'home'"]),
        ("[profiles.x.contract]\nmethods = ['fit']\n", ["field 'methods'", "including predict"]),
        ("[profiles.x.contract]\ndtypes = 'float32'\n", ["field 'dtypes' must be a list of str", "str 'float32'"]),
        ("[profiles.x.contract]\nclass_name = 'class'\n", ["field 'class_name'", "no keyword", "'class'"]),
        ("[profiles.x.contract]\nclass_name = 'preprocess'\n", ["no name model.py defines itself", "'preprocess'"]),
        ("[profiles.x.contract]\ninit_args = ['path', 'path']\n", ["field 'init_args'", "without repeats"]),
        ("[profiles.x.contract]\nmethods = ['predict', 'fit']\n", ["field 'methods'", "fit comes before predict"]),
        ("[profiles.an2dl-2024]\ncontract = 2024\n", ["taken by a built-in profile"]),
        ("[profiles.x.contract]\nnum_classes = 1\n", ["field 'num_classes' must be an integer of at least 2", "1"]),
        ("[profiles.x.contract]\nnum_classes = '8'\n", ["field 'num_classes' must be int or none", "str '8'"]),
        ("[profiles.x.contract]\nimage_shape = [96, 96]\n", ["field 'image_shape' must be [height, width, channels]"]),
    ],
)
def test_profile_files_are_validated_with_one_line_errors(tmp_path, text, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RuntimeProfileError) as info:
        load_user_profiles(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_earlier_profile_files_still_load():
    """`input_dtypes` beside a shorthand contract, as profile files said it before contracts were records."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write('[profiles.leaves]\ncontract = 2023\ninput_dtypes = ["float32", "uint8"]\n')
    contract = load_user_profiles(handle.name)["leaves"].contract
    Path(handle.name).unlink()
    assert contract.class_name == "model" and contract.dtypes == ("float32", "uint8") and contract.metadata


def test_runtime_list_on_a_bad_profiles_file_is_one_json_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles]\nfoo = 3\n")
    cbtool = Path(sys.executable).with_name("cbtool")
    proc = subprocess.run([str(cbtool), "runtime", "list", "--profiles-file", str(bad), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["kind"] == "runtime" and "foo" in error["message"]


def test_validate_preprocessing_refuses_pickled_data_unless_allowed(tmp_path):
    run, export = shared_export()
    objects = tmp_path / "objects.npz"
    images = np.zeros((2, 96, 96, 3), np.uint8)
    np.savez(objects, images=images, labels=np.array(["healthy", "unhealthy"], dtype=object))
    zip_path = tmp_path / "s.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: the data is refused before it matters
    result = CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), "--run", str(run), "--data", str(objects)])
    assert result.exit_code == 1
    assert "pickle" in result.output and "--allow-pickle" in result.output and "Traceback" not in result.output
