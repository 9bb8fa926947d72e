"""Verdicts that mean something: simulate refuses classes and image sizes the submission or grader cannot mean,
marks accuracy near chance as a warning, check enforces the contract's class count, and the reported versions are
what the sandboxed runtime imported (issue 12, findings 1, 2, 3, 5 and 10).

The submissions are tests/fixtures/sim_submissions' numpy-only nearest-centroid model (tests/test_simulate.py
makes the zips), with a manifest.json added where a finding needs the submission's class list.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from test_simulate import N_CLASSES, _images, centroids, heldout, make_zip  # noqa: F401 - fixtures reused
from toolkit.cli import main
from toolkit.data.io import BLOOD_CELL_CLASSES


def _cli(*args) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*map(str, args), "--json"])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:  # pragma: no cover - shows what went wrong
        raise AssertionError(f"not one JSON document (exit {result.exit_code}):\n{result.output}") from None


def _with_manifest(zip_path: Path, classes: list[str]) -> Path:
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("manifest.json", json.dumps({"classes": classes}))
    return zip_path


@pytest.fixture(scope="module")
def blood_zip(tmp_path_factory, centroids) -> Path:  # noqa: F811
    """The 8-class blood-cell submission: a good model whose manifest names the AN2DL 2024 classes."""
    return _with_manifest(make_zip("good", tmp_path_factory.mktemp("blood"), centroids), BLOOD_CELL_CLASSES)


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    """A 2-class leaf held-out set in the AN2DL 2023 schema (string labels); its images are blood classes 0 and 1."""
    rng = np.random.default_rng(5)
    labels = np.arange(20) % 2
    path = tmp_path_factory.mktemp("leaves") / "leaves.npz"
    np.savez(path, data=_images(rng, labels), labels=np.array(["healthy", "unhealthy"])[labels])
    return path


def test_an_8_class_zip_on_a_2_class_heldout_set_is_refused_unless_mapped(blood_zip, leaves, tmp_path):
    code, out = _cli("simulate", blood_zip, "--data", leaves, "--profile", "local")
    message = out["error"]["message"]
    assert code == 1 and "\n" not in message, out
    assert str(leaves) in message and "['healthy', 'unhealthy'] (2)" in message and "lists 8 classes" in message
    assert "Basophil" in message and "--class-map" in message
    code, out = _cli("simulate", blood_zip, "--data", leaves, "--profile", "local", "--class-map", "healthy=Basophil,unhealthy=1")
    assert code == 0 and out["status"] == "ok", out
    assert out["class_map"] == {"healthy": "Basophil", "unhealthy": "Eosinophil"}
    assert out["class_names"] == BLOOD_CELL_CLASSES and out["scores"]["accuracy"] > 0.9
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"healthy": "Basophil", "unhealthy": "Eosinophil"}))
    code, again = _cli("simulate", blood_zip, "--data", leaves, "--profile", "local", "--class-map", mapping)
    assert code == 0 and again["scores"]["accuracy"] == out["scores"]["accuracy"]
    code, bad = _cli("simulate", blood_zip, "--data", leaves, "--profile", "local", "--class-map", "healthy=Rose")
    assert code == 2 and "'Rose' is not among the 8 classes of manifest.json" in bad["error"]["message"], bad


def test_integer_labels_are_checked_by_range_and_a_zip_without_manifest_warns(tmp_path, heldout, centroids):  # noqa: F811
    few = _with_manifest(make_zip("good", tmp_path, centroids), ["a", "b", "c"])
    code, out = _cli("simulate", few, "--data", heldout[0], "--profile", "local")
    assert code == 1 and "held-out labels go up to 7 (8 classes), manifest.json lists 3 classes" in out["error"]["message"]
    (tmp_path / "bare").mkdir()
    code, out = _cli("simulate", make_zip("good", tmp_path / "bare", centroids), "--data", heldout[0], "--profile", "local")
    assert code == 0 and any("no manifest.json class list" in w for w in out["warnings"]), out["warnings"]


def test_accuracy_near_chance_is_a_warning_in_text_and_json(tmp_path, heldout, centroids):  # noqa: F811
    wrong = make_zip("good", tmp_path, np.roll(centroids, 1, axis=0))  # every class answered as its neighbour
    code, out = _cli("simulate", wrong, "--data", heldout[0], "--profile", "local")
    labels = heldout[2]
    chance = max(1 / N_CLASSES, np.bincount(labels).max() / len(labels))
    assert code == 0 and out["status"] == "ok"  # it ran: the exit code says so, the warning says what it means
    assert out["chance_level"] == pytest.approx(chance) and out["near_chance"] is True
    assert out["scores"]["accuracy"] < 1.5 * chance
    assert any(f"is near the chance level {100 * chance:.2f}%" in w for w in out["warnings"]), out["warnings"]
    text = CliRunner().invoke(main, ["simulate", str(wrong), "--data", str(heldout[0]), "--profile", "local"]).output
    assert f"warning: accuracy {100 * out['scores']['accuracy']:.2f}% is near the chance level" in text
    (tmp_path / "good").mkdir()
    code, good = _cli("simulate", make_zip("good", tmp_path / "good", centroids), "--data", heldout[0], "--profile", "local")
    assert code == 0 and good["near_chance"] is False and not any("chance level" in w for w in good["warnings"])


def test_a_7_class_zip_fails_check_under_an2dl_2024(tmp_path, centroids):  # noqa: F811
    seven = _with_manifest(make_zip("good", tmp_path, centroids), BLOOD_CELL_CLASSES[:7])
    code, out = _cli("check", seven, "--profile", "an2dl-2024")
    assert code == 1 and out["ok"] is False, out
    issue = next(i for i in out["issues"] if i["code"] == "class_count")
    assert issue["severity"] == "error" and "8 classes" in issue["expected"] and "a model of 7 classes" in issue["found"]
    assert "Platelet" not in issue["found"] and "Neutrophil" in issue["found"]
    (tmp_path / "eight").mkdir()
    eight = _with_manifest(make_zip("good", tmp_path / "eight", centroids), BLOOD_CELL_CLASSES)
    code, out = _cli("check", eight, "--profile", "an2dl-2024")
    assert code == 0 and not [i for i in out["issues"] if i["code"] == "class_count"], out
    code, out = _cli("check", eight, "--profile", "an2dl-2023")  # the leaves grader scores 2 classes
    assert code == 1 and any(i["code"] == "class_count" and "2 classes" in i["expected"] for i in out["issues"])


def test_build_submission_fails_on_the_contracts_class_count(tmp_path):
    from submission_data import shared_export

    _, export = shared_export()  # 8 classes; the leaves grader scores 2
    code, out = _cli("build-submission", export, "-o", tmp_path / "s.zip", "--profile", "an2dl-2023")
    assert code == 1 and out["check"]["ok"] is False, out
    assert [i["code"] for i in out["check"]["issues"] if i["severity"] == "error"] == ["class_count"]


def test_a_128px_heldout_set_is_refused_for_a_96px_grader(tmp_path, blood_zip):
    rng = np.random.default_rng(0)
    big = tmp_path / "big.npz"
    np.savez(big, images=rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8), labels=np.arange(4))
    code, out = _cli("simulate", blood_zip, "--data", big, "--profile", "an2dl-2024")  # refused before any run
    message = out["error"]["message"]
    assert code == 1 and str(big) in message and "images are 128x128x3" in message, out
    assert "feeds 96x96x3: resize your held-out set to 96x96 or use a profile whose contract says image_shape = [128, 128, 3]" in message


KERAS_MODEL_PY = '''import os

import keras  # imported as the grader would, so the runtime's versions are the ones reported
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


class Model:
    def __init__(self):
        self.centroids = np.load(os.path.join(HERE, "weights.npz"))["centroids"]

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        f = X.reshape(len(X), 8, 12, 8, 12, 3).mean(axis=(2, 4)).reshape(len(X), -1)
        return np.argmin(((f[:, None, :] - self.centroids[None]) ** 2).sum(axis=-1), axis=1)
'''


def test_versions_are_what_the_sandboxed_runtime_imported(tmp_path, heldout, centroids):  # noqa: F811
    from toolkit.errors import RuntimeProfileError
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python

    try:
        python = runtime_python(get_profile("an2dl-2024"))
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"the an2dl-2024 runtime is unavailable: {exc}")
    zip_path, weights = tmp_path / "keras.zip", tmp_path / "weights.npz"
    np.savez(weights, centroids=centroids)
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("model.py", KERAS_MODEL_PY)
        zf.write(weights, "weights.npz")
    code, out = _cli("simulate", zip_path, "--data", heldout[0], "--profile", "an2dl-2024")
    assert code == 0, out
    runtime_numpy = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                                   text=True, check=True).stdout.strip()
    versions = out["versions"]
    assert versions["keras"] == "3.4.1" and versions["tensorflow"].startswith("2.17."), versions
    assert versions["numpy"] == runtime_numpy and versions["numpy"].startswith("1."), versions  # the host has numpy 2
    assert "keras==3.4.1" in versions["runtime"] and "cbtool" in versions


def _oof_run(path: Path, start: int, labels: np.ndarray, predicted: np.ndarray) -> Path:
    """A finished run dir holding only what cv-report reads: classes.json and oof.npz."""
    from toolkit.artifacts import RunDir

    paths = RunDir(path)
    path.mkdir(parents=True)
    paths.classes.write_text(json.dumps({"class_names": ["a", "b", "c", "d"]}))
    np.savez(paths.oof, original_indices=np.arange(start, start + len(labels)), labels=labels,
             probs=np.eye(4, dtype=np.float32)[predicted])
    return path


def test_cv_report_warns_when_the_pooled_accuracy_is_near_chance(tmp_path):
    labels = np.arange(40) % 4
    lucky = np.where(np.arange(40) % 10 == 0, labels, (labels + 1) % 4)  # 10% right: chance is 25%
    runs = [_oof_run(tmp_path / f"r{i}", 40 * i, labels, lucky) for i in (0, 1)]
    code, out = _cli("cv-report", *runs)
    assert code == 0 and out["chance_level"] == 0.25 and out["near_chance"] is True, out
    assert any("out-of-fold accuracy 10.00% is near the chance level 25.00%" in w for w in out["warnings"])
    good = [_oof_run(tmp_path / f"g{i}", 40 * i, labels, labels) for i in (0, 1)]
    code, out = _cli("cv-report", *good)
    assert code == 0 and out["near_chance"] is False and not any("chance level" in w for w in out["warnings"])


def test_near_chance_is_1_5x_for_many_classes_and_stays_honest_on_two_imbalanced_ones():
    """8 balanced classes: below 1.5x chance (18.75%). 62% healthy leaves: 1.5x would be 93% and flag a good model, so
    the bound is a quarter of the way from chance to 100% (71.5%)."""
    from toolkit.results import chance_level, chance_warning, near_chance

    assert near_chance(0.18, 0.125) and not near_chance(0.19, 0.125)
    chance = chance_level([0] * 62 + [1] * 38, 2)
    assert chance == 0.62 and near_chance(0.70, chance) and not near_chance(0.90, chance)
    assert chance_warning("accuracy", 0.90, chance) is None
    assert "below 71.50%" in chance_warning("accuracy", 0.70, chance)


def test_simulate_says_when_the_loader_rescaled_0_1_floats(tmp_path, heldout, centroids):  # noqa: F811
    """A held-out set stored as x/255 floats is scored as pixels, and the JSON says so (it was silent)."""
    path = tmp_path / "floats.npz"
    np.savez(path, images=heldout[1].astype(np.float32) / 255.0, labels=heldout[2].reshape(-1, 1))
    code, out = _cli("simulate", make_zip("good", tmp_path, centroids), "--data", path, "--profile", "local")
    assert code == 0 and any("[0, 1]" in w and "floats.npz" in w for w in out["warnings"]), out["warnings"]
