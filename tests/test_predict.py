"""`cbtool predict`: the CSV holds what the sandbox predicts (the same loader as simulate), row for row.

A convnext_test run (random weights, tests/export_data.py) built into a `local` zip gives real Keras predictions;
hand-written numpy-only model.py files give fast fixtures for the CSV layout and the failure kinds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main

N_TEST = 24  # probe images of the run: the test set


def invoke(*args) -> tuple[int, dict | str]:
    """`cbtool *args`: (exit code, the JSON document under --json, else the combined output)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if "--json" not in args:
        return result.exit_code, result.output
    try:
        return result.exit_code, json.loads(result.stdout)
    except json.JSONDecodeError:  # pragma: no cover - shows what went wrong
        raise AssertionError(f"not one JSON document (exit {result.exit_code}):\n{result.output}\n{result.exception!r}")


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def numpy_zip(path: Path, predict_body: str, manifest: dict | None = None) -> Path:
    """A hand-written, numpy-only submission (as students write them) whose predict returns `predict_body`."""
    source = ("import numpy as np\n\n\nclass Model:\n    def __init__(self):\n        pass\n\n"
              f"    def predict(self, X):\n        return {predict_body}\n")  # fmt: skip
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", source)
        if manifest is not None:
            zf.writestr("manifest.json", json.dumps(manifest))
    return path


BRIGHTNESS = "(np.asarray(X, dtype=np.float64).mean(axis=(1, 2, 3)) // 8).astype(np.int64) % 3"
ONE_HOT = f"np.eye(3, dtype=np.float32)[{BRIGHTNESS}]"


@pytest.fixture(scope="module")
def convnext(tmp_path_factory) -> dict:
    """A real convnext_test run, its `local` zip, a labelled test npz of its probe images, and the true labels."""
    from export_data import CLASSES, make_run_dir

    from toolkit.runtime.profiles import local_profile
    from toolkit.submission.build import build_submission

    base = tmp_path_factory.mktemp("predict")
    run = make_run_dir(base / "run", n_probe=N_TEST, seed=3)
    with np.load(run / "probe.npz") as probe:
        images = probe["images"]
    labels = np.random.default_rng(7).integers(0, len(CLASSES), N_TEST)
    np.savez(base / "test.npz", images=images, labels=labels.reshape(-1, 1))
    build_submission(run, base / "submission.zip", local_profile())
    return {"run": run, "zip": base / "submission.zip", "data": base / "test.npz", "images": images, "labels": labels,
            "base": base, "classes": CLASSES}


@pytest.fixture(scope="module")
def sandbox_predictions(convnext) -> np.ndarray:
    """What the one loader returns for the whole test set in the local runtime, fed the contract's first dtype."""
    from toolkit.runtime.profiles import local_profile
    from toolkit.runtime.sandbox import run_submission

    profile = local_profile()
    outcome = run_submission(convnext["zip"], profile, {"x": convnext["images"].astype(profile.contract.dtypes[0])})
    assert outcome.ok, outcome.failure
    return np.asarray(outcome.outputs["x"])


def test_csv_labels_are_the_sandbox_predictions_and_give_simulates_confusion_matrix(convnext, sandbox_predictions):
    csv_path = convnext["base"] / "predictions.csv"
    code, out = invoke("predict", convnext["zip"], "--data", convnext["data"], "-o", csv_path, "--profile", "local", "--json")
    assert code == 0, out
    rows = read_csv(csv_path)
    assert rows[0] == ["id", "label"] and len(rows) == N_TEST + 1
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(N_TEST)]  # no ids in the npz: the row index
    labels = np.array([int(r[1]) for r in rows[1:]])
    assert len(np.unique(labels)) > 1, "a model predicting one class for every image would make this test weak"
    np.testing.assert_array_equal(labels, sandbox_predictions)
    code, sim = invoke("simulate", convnext["zip"], "--data", convnext["data"], "--profile", "local", "--json")
    assert code == 0, sim
    k = len(convnext["classes"])
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (convnext["labels"], labels), 1)
    assert confusion.tolist() == sim["scores"]["confusion_matrix"]
    assert out["sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()
    assert out["n"] == N_TEST and out["profile"] == "local" and out["input_dtype"] == "uint8" and not out["built"]
    assert out["counts"] == {str(c): int(np.sum(labels == c)) for c in range(k)}
    assert out["timing"]["predict_s"] > 0 and out["timing"]["load_s"] > 0 and out["schema_version"] == 1


def test_label_names_ids_from_the_npz_and_batches(convnext, sandbox_predictions):
    """Unlabelled test set with string ids; --label-names writes the manifest's classes; batching changes nothing."""
    data = convnext["base"] / "unlabelled.npz"
    ids = np.array([f"cell_{i:03d}.png" for i in range(N_TEST)][::-1])
    np.savez(data, images=convnext["images"], ids=ids)
    csv_path = convnext["base"] / "named.csv"
    code, out = invoke("predict", convnext["zip"], "--data", data, "-o", csv_path, "--profile", "local", "--label-names",
                       "--id-column", "image_id", "--batch-size", "5", "--json")  # fmt: skip
    assert code == 0, out
    rows = read_csv(csv_path)
    assert rows[0] == ["image_id", "label"]
    assert [r[0] for r in rows[1:]] == ids.tolist()
    assert [r[1] for r in rows[1:]] == [convnext["classes"][i] for i in sandbox_predictions]
    assert out["batches"] == 5 and out["ids_from"] == "ids" and out["class_names"] == convnext["classes"]
    assert sum(out["counts"].values()) == N_TEST and set(out["counts"]) == set(convnext["classes"])


def test_a_run_dir_is_built_into_the_zip_whose_predictions_the_csv_holds(convnext, sandbox_predictions):
    data = convnext["base"] / "data_schema.npz"  # the 2023 image key, float pixels, integer ids under `id`
    np.savez(data, data=convnext["images"].astype(np.float32), id=np.arange(1000, 1000 + N_TEST))
    csv_path = convnext["base"] / "from_run.csv"
    code, out = invoke("predict", convnext["run"], "--data", data, "-o", csv_path, "--profile", "local", "--json")
    assert code == 0, out
    rows = read_csv(csv_path)
    assert [r[0] for r in rows[1:]] == [str(1000 + i) for i in range(N_TEST)]
    np.testing.assert_array_equal([int(r[1]) for r in rows[1:]], sandbox_predictions)
    assert out["built"] and out["timing"]["build_s"] > 0 and out["ids_from"] == "id"


def test_bad_output_exits_3_names_the_kind_and_leaves_no_csv(tmp_path, tiny_npz):
    zip_path = numpy_zip(tmp_path / "one_hot.zip", ONE_HOT)
    csv_path = tmp_path / "predictions.csv"
    code, out = invoke("predict", zip_path, "--data", tiny_npz, "-o", csv_path, "--profile", "local", "--json")
    assert code == 3, out
    assert out["error"]["kind"] == "submission_failed" and "bad_output during predict" in out["error"]["message"]
    assert "one-hot rows" in out["error"]["message"] and not csv_path.exists()
    csv_path.write_text("an earlier, good file\n")  # atomic: a failed run leaves what was there
    code, text = invoke("predict", zip_path, "--data", tiny_npz, "-o", csv_path, "--profile", "local")
    assert code == 3 and "error:" in text and "bad_output" in text
    assert csv_path.read_text() == "an earlier, good file\n" and list(tmp_path.glob(".predictions.csv.*")) == []
    broken = numpy_zip(tmp_path / "broken.zip", "X")
    broken_py = zipfile.ZipFile(broken).read("model.py").decode().replace("import numpy as np", "import keras_cv")
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("model.py", broken_py)
    code, out = invoke("predict", broken, "--data", tiny_npz, "-o", tmp_path / "x.csv", "--profile", "local", "--json")
    assert code == 3 and "import_error during import" in out["error"]["message"] and "keras_cv" in out["error"]["message"]


def test_label_names_are_refused_when_the_zip_names_no_classes(tmp_path, tiny_npz):
    zip_path = numpy_zip(tmp_path / "plain.zip", BRIGHTNESS)
    code, out = invoke("predict", zip_path, "--data", tiny_npz, "-o", tmp_path / "p.csv", "--profile", "local",
                       "--label-names", "--json")  # fmt: skip
    assert code == 1 and "--label-names" in out["error"]["message"] and "manifest.json" in out["error"]["message"]
    assert not (tmp_path / "p.csv").exists()
    named = numpy_zip(tmp_path / "named.zip", BRIGHTNESS, manifest={"classes": ["a", "b", "c"]})
    code, out = invoke("predict", named, "--data", tiny_npz, "-o", tmp_path / "p.csv", "--profile", "local",
                       "--label-names", "--json")  # fmt: skip
    assert code == 0 and {r[1] for r in read_csv(tmp_path / "p.csv")[1:]} <= {"a", "b", "c"}


def test_deterministic_output_one_line_summary_and_unknown_class_count(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "test.npz"
    np.savez(data, images=rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8))
    zip_path = numpy_zip(tmp_path / "s.zip", BRIGHTNESS)
    code, first = invoke("predict", zip_path, "--data", data, "-o", tmp_path / "a.csv", "--profile", "local", "--json")
    assert code == 0, first
    assert any("class count is unknown" in w for w in first["warnings"])
    code, text = invoke("predict", zip_path, "--data", data, "-o", tmp_path / "b.csv", "--profile", "local", "--quiet",
                        "--batch-size", "7")  # fmt: skip
    assert code == 0 and text.splitlines()[0].startswith(f"wrote {tmp_path / 'b.csv'}: 30 rows (id,label)")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    with np.load(data) as arrays:
        expected = (arrays["images"].astype(np.float64).mean(axis=(1, 2, 3)) // 8).astype(int) % 3
    assert [int(r[1]) for r in read_csv(tmp_path / "a.csv")[1:]] == expected.tolist()


@pytest.mark.parametrize(("arrays", "extra", "needle"), [
    ({"ids": np.array(["a", 1, None], dtype=object)}, [], "--allow-pickle"),
    ({"ids": np.array([1, 2, 1])}, [], "holds id 1 twice (rows 0 and 2)"),
    ({"ids": np.arange(4)}, [], "'ids' has shape (4,), expected (3,)"),
    ({}, ["--id-column", "label"], "--id-column"),
])  # fmt: skip
def test_test_set_problems_are_one_line_errors(tmp_path, arrays, extra, needle):
    data = tmp_path / "test.npz"
    np.savez(data, images=np.zeros((3, 8, 8, 3), dtype=np.uint8), **arrays)
    zip_path = numpy_zip(tmp_path / "s.zip", BRIGHTNESS)
    code, out = invoke("predict", zip_path, "--data", data, "-o", tmp_path / "p.csv", "--profile", "local", *extra, "--json")
    assert code == 1 and needle in out["error"]["message"] and "\n" not in out["error"]["message"], out
    assert not (tmp_path / "p.csv").exists()


def test_pickled_ids_pass_with_allow_pickle_and_missing_images_are_named(tmp_path):
    zip_path = numpy_zip(tmp_path / "s.zip", BRIGHTNESS)
    data = tmp_path / "test.npz"
    np.savez(data, images=np.zeros((3, 8, 8, 3), dtype=np.uint8), ids=np.array(["a", 1, "c"], dtype=object))
    code, out = invoke("predict", zip_path, "--data", data, "-o", tmp_path / "p.csv", "--profile", "local", "--allow-pickle", "--json")
    assert code == 0, out
    assert read_csv(tmp_path / "p.csv")[1:] == [["a", "0"], ["1", "0"], ["c", "0"]]
    np.savez(data, pixels=np.zeros((3, 8, 8, 3), dtype=np.uint8))
    code, out = invoke("predict", zip_path, "--data", data, "-o", tmp_path / "p.csv", "--profile", "local", "--json")
    assert code == 1 and "expected an image array 'images' or 'data' or 'x'; found keys pixels" in out["error"]["message"]


def test_pinned_2024_runtime_csv_is_what_its_sandbox_predicts(convnext):
    """The same comparison in the grader's TF 2.17 / Keras 3.4.1 venv (skipped only where it cannot be created)."""
    from toolkit.errors import RuntimeProfileError
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import run_submission, runtime_python
    from toolkit.submission.build import build_submission

    profile = get_profile("an2dl-2024")
    try:
        runtime_python(profile)
    except RuntimeProfileError as exc:
        pytest.skip(f"the an2dl-2024 runtime is unavailable here: {exc}")
    zip_path = build_submission(convnext["run"], convnext["base"] / "pinned.zip", profile).zip
    csv_path = convnext["base"] / "pinned.csv"
    code, out = invoke("predict", zip_path, "--data", convnext["data"], "-o", csv_path, "--json")  # profile: the manifest's
    assert code == 0, out
    assert out["profile"] == "an2dl-2024" and out["input_dtype"] == profile.contract.dtypes[0]
    outcome = run_submission(zip_path, profile, {"x": convnext["images"].astype(profile.contract.dtypes[0])})
    assert outcome.ok, outcome.failure
    np.testing.assert_array_equal([int(r[1]) for r in read_csv(csv_path)[1:]], outcome.outputs["x"])
