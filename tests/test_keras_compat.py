"""Keras compatibility by what the target Keras accepts: `check`'s verdict on a model file equals whether the
runtime's own `keras.models.load_model` loads it.

Model files are saved at test time by each Keras (the an2dl-2024 runtime's 3.4.1, the an2dl-2023 runtime's 2.15,
this venv's 3.x) from student-style models: augmentation + conv head, a Sequential MLP, a keras.applications
backbone with `weights=None`. Nothing binary is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from toolkit.errors import RuntimeProfileError
from toolkit.runtime.keras_compat import saved_keras_config, saved_keras_version, target_keras
from toolkit.runtime.profiles import get_profile
from toolkit.runtime.venv import ensure_venv
from toolkit.submission.check import check_submission

FIXTURES = Path(__file__).parent / "fixtures" / "check_submissions"
P2024, P2023 = get_profile("an2dl-2024"), get_profile("an2dl-2023")
ENV = {"PATH": os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": os.environ.get("HOME", "/tmp")}

SAVE = r"""
import os, sys, warnings
warnings.filterwarnings("ignore")
import keras
out = sys.argv[1]
tag = sys.argv[2]

def small():
    inp = keras.Input((32, 32, 3))
    x = keras.layers.RandomFlip("horizontal")(inp)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-4))(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inp, keras.layers.Dense(8, activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

small().save(os.path.join(out, tag + "_small.keras"))
small().save(os.path.join(out, tag + "_small.h5"))
seq = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(4, activation="gelu"), keras.layers.Dense(2)])
seq.save(os.path.join(out, tag + "_seq.keras"))
base = keras.applications.MobileNetV3Small(weights=None, include_top=False, input_shape=(96, 96, 3))
head = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(base.output))
keras.Model(base.input, head).save(os.path.join(out, tag + "_mnv3.keras"))
print(keras.__version__)
"""

LOAD = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import keras
result = {}
for path in sys.argv[1:]:
    try:
        keras.models.load_model(path)  # compile=True, as the students' model.py files call it
        result[path] = None
    except Exception as exc:
        result[path] = " ".join(str(exc).split())[-400:]
print(json.dumps(result))
"""


def _python(name: str, packages: list[str]) -> str:
    try:
        return str(ensure_venv(name, packages))
    except RuntimeProfileError as exc:
        if "registry reachable" in str(exc):
            pytest.skip(f"cannot create the {name} runtime venv: pip cannot reach a package registry ({exc})")
        raise


def _run(python: str, script: str, *args: str) -> str:
    proc = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def _save(python: str, out: Path, tag: str) -> tuple[str, list[Path]]:
    version = _run(python, SAVE, str(out), tag)
    return version, sorted(out.glob(f"{tag}_*"))


@pytest.fixture(scope="module")
def runtimes() -> dict[str, str]:
    return {p.name: _python(p.name, list(p.packages)) for p in (P2024, P2023)}


@pytest.fixture(scope="module")
def saved(runtimes, tmp_path_factory) -> dict[str, list[Path]]:
    """{saving Keras version: model files} for the two runtimes' Kerases and this venv's."""
    out = tmp_path_factory.mktemp("saved")
    files = {}
    for tag, python in (("k2024", runtimes["an2dl-2024"]), ("k2023", runtimes["an2dl-2023"]), ("here", sys.executable)):
        version, paths = _save(python, out, tag)
        files[version] = paths
    return files


def _zip(folder: str, dest: Path, files: dict[str, Path]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted((FIXTURES / folder).iterdir()):
            zf.write(path, path.name)
        for name, path in files.items():
            zf.write(path, name)
    return dest


def _loads(python: str, paths: list[Path]) -> dict[str, str | None]:
    return {Path(k).name: v for k, v in json.loads(_run(python, LOAD, *map(str, paths))).items()}


@pytest.mark.parametrize("profile", [P2024, P2023], ids=lambda p: p.name)
def test_check_verdict_equals_whether_the_runtime_loads_it(profile, runtimes, saved, tmp_path):
    """Every file saved by every Keras: check flags it exactly when the runtime's load_model raises."""
    paths = [p for group in saved.values() for p in group]
    loads = _loads(runtimes[profile.name], paths)
    folder = "load_keras" if profile is P2024 else "load_keras2023"
    report = check_submission(_zip(folder, tmp_path / "all.zip", {p.name: p for p in paths}), profile)
    flagged = {i.file for i in report.issues if i.severity == "error"}
    assert {i.code for i in report.issues if i.severity == "error"} <= {"keras_version"}, report.issues
    assert {name: name in flagged for name in loads} == {name: err is not None for name, err in loads.items()}, loads
    assert report.runtime_keras == profile.keras_version


def test_files_saved_by_the_runtimes_own_keras_pass(saved, tmp_path):
    own24 = next(p for p in saved["3.4.1"] if p.name.endswith("_small.keras"))
    own23 = next(p for p in saved["2.15.0"] if p.name.endswith("_small.keras"))
    report24 = check_submission(_zip("load_keras", tmp_path / "a.zip", {"weights.keras": own24}), P2024)
    report23 = check_submission(_zip("load_keras2023", tmp_path / "b.zip", {"weights.keras": own23}), P2023)
    assert report24.ok and not report24.issues, report24.issues
    assert report23.ok and not report23.issues, report23.issues  # a Keras 2.15 .keras in the 2.15 runtime: no false alarm
    assert report24.keras_files == {"weights.keras": "3.4.1"} and report23.keras_files == {"weights.keras": "2.15.0"}


def test_newer_keras_file_fails_naming_both_versions_and_the_rejected_key_first(runtimes, saved, tmp_path):
    here = next(v for v in saved if v.startswith("3.") and v != "3.4.1")
    path = next(p for p in saved[here] if p.name.endswith("_small.keras"))
    report = check_submission(_zip("load_keras", tmp_path / "new.zip", {"weights.keras": path}), P2024)
    issue = next(i for i in report.issues if i.code == "keras_version")
    assert not report.ok and issue.severity == "error"
    prefix = f"weights.keras: saved by Keras {here}; an2dl-2024's Keras 3.4.1 rejects "
    assert issue.message.startswith(prefix), issue.message
    first = target_keras(P2024).incompatibilities(saved_keras_config(path.read_bytes(), path.name))[0]
    assert issue.message.startswith(prefix + first.describe())
    # the real loader fails on that same class and argument
    error = _loads(runtimes["an2dl-2024"], [path])[path.name]
    assert first.class_name in error and first.key in error, (first, error)


def test_saved_keras_version_reads_keras_and_h5(saved):
    for version, paths in saved.items():
        for path in paths:
            assert saved_keras_version(path.read_bytes(), path.name) == version


def test_target_table_is_cached_and_names_what_each_keras_accepts(runtimes):
    t24, t23 = target_keras(P2024), target_keras(P2023)
    assert (t24.version, t24.major, t23.version, t23.major) == ("3.4.1", 3, "2.15.0", 2)
    assert t24.accepted["GlorotUniform"] == {"seed"} and "input_axes" not in t24.accepted["GlorotUniform"]
    assert "*" in t24.accepted["InputLayer"] and "*" not in t23.accepted["InputLayer"]  # 3.4.1 swallows extra keys
    assert {"units", "activation", "input_shape", "trainable", "dtype"} <= t24.accepted["Dense"]
    assert "quantization_config" not in t24.accepted["Dense"]
    assert "batch_input_shape" in t23.accepted["Dense"]  # Keras 2's Layer allowed_kwargs
    start = time.perf_counter()
    assert target_keras(P2024).accepted == t24.accepted
    assert time.perf_counter() - start < 1.0  # read from the cache, no child


def test_unknown_class_and_argument_in_a_hand_written_config(runtimes):
    target = target_keras(P2024)
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"name": "m", "layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2, "name": "d", "bogus": 1,
         "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}}},
        {"module": "keras.layers", "class_name": "NoSuchLayer", "config": {}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2, "activation": "no_such_fn"}}],
        "input_layers": [], "output_layers": []}}
    found = [(i.path, i.class_name, i.key, i.kind) for i in target.incompatibilities(config)]
    assert found == [("layers[0]", "Dense", "bogus", "unknown_argument"), ("layers[1]", "NoSuchLayer", None, "unknown_class"),
                     ("layers[2].config.activation", "no_such_fn", None, "unknown_class")]


def test_template_with_bare_relative_load_passes_with_a_warning(saved, tmp_path):
    own = next(p for p in saved["3.4.1"] if p.name.endswith("_small.keras"))
    report = check_submission(_zip("template2024", tmp_path / "t.zip", {"weights.keras": own}), P2024)
    assert report.ok and [i.code for i in report.issues] == ["relative_path"], report.issues
    assert "tfk.models.load_model('weights.keras')" in report.issues[0].message


def test_without_the_runtime_venv_check_warns_instead_of_guessing(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("CBTOOL_CACHE_DIR", str(tmp_path / "empty-cache"))
    path = next(p for p in saved["2.15.0"] if p.name.endswith("_small.keras"))
    report = check_submission(_zip("load_keras", tmp_path / "w.zip", {"weights.keras": path}), P2024)
    assert report.ok and report.warnings == 1 and report.errors == 0, report.issues
    issue = report.issues[0]
    assert issue.code == "keras_unverified" and issue.severity == "warning"
    assert "saved by Keras 2.15.0" in issue.message and "cbtool runtime create an2dl-2024" in issue.message
    assert not (tmp_path / "empty-cache" / "runtimes").exists()  # check never creates a venv


@pytest.mark.slow
def test_keras_350_file_loads_in_341_and_passes(runtimes, tmp_path):
    """Measured: a .keras saved by Keras 3.5.0 loads in the 3.4.1 runtime, so check must pass it (no version rule)."""
    python = _python("keras-3.5.0", ["tensorflow-cpu==2.17.0", "keras==3.5.0", "numpy<2"])
    version, paths = _save(python, tmp_path, "k350")
    assert version == "3.5.0"
    loads = _loads(runtimes["an2dl-2024"], paths)
    assert loads == {p.name: None for p in paths}, loads
    report = check_submission(_zip("load_keras", tmp_path / "k.zip", {p.name: p for p in paths}), P2024)
    assert report.ok and not report.issues, report.issues
    assert set(report.keras_files.values()) == {"3.5.0"}
