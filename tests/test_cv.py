"""k-fold runs as independent jobs: `split --folds`, `train --fold` (oof.npz, fold record) and `cv-report`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from train_data import shapes_dataset
from toolkit.cli import main
from toolkit.data.io import load_dataset, save_dataset

FAST = ["--model", "convnext_test", "--weights", "none", "--batch-size", "8", "--epochs", "1", "--augment", "none"]


def _cli(*args: str, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """A 3-fold split of 24 tiny images (4 classes), with one exact duplicate pair planted."""
    root = tmp_path_factory.mktemp("cv")
    ds = shapes_dataset(n_per_class=6, num_classes=4, seed=3)
    copy = int(np.flatnonzero(ds.labels == ds.labels[0])[1])
    ds.images[copy] = ds.images[0]  # a planted same-class copy
    save_dataset(ds, root / "data.npz", schema="generic")
    payload = json.loads(_cli("split", root / "data.npz", "--folds", 3, "--seed", 4, "-o", root / "folds", "--json").output)
    return root, {**payload, "planted_copy": copy}


@pytest.fixture(scope="module")
def runs(folds):
    pytest.importorskip("tensorflow")
    root, _ = folds
    out = []
    for i in (1, 2, 3):
        run = root / f"run_{i}"
        _cli("train", "--fold", root / "folds" / f"fold_{i}", *FAST, "-o", run, "--quiet")
        out.append(run)
    return out


def test_split_folds_result_and_files(folds, tmp_path):
    root, payload = folds
    assert payload["k"] == 3 and payload["n"] == 24 and payload["schema_version"] == 1
    record = json.loads((root / "folds" / "folds.json").read_text())
    rows = record["rows"]
    copy = payload["planted_copy"]
    assert sorted(rows["original_index"]) == list(range(24)) and rows["fold"][0] == rows["fold"][copy]  # the copy stays
    assert rows["group"][0] == rows["group"][copy] and len(set(rows["group"])) == 23
    assert [f["val"] for f in payload["folds"]] == [8, 8, 8]
    for f in payload["folds"]:
        assert sorted(f["class_counts"].values()) == [2, 2, 2, 2]  # 6 per class over 3 folds: exactly 2 each
    again = json.loads(_cli("split", root / "data.npz", "--folds", 3, "--seed", 4, "-o", tmp_path / "again", "--json").output)
    assert json.loads((tmp_path / "again" / "folds.json").read_text())["rows"] == rows and again["folds"][0]["class_counts"]
    _cli("split", root / "data.npz", "--folds", 3, "--seed", 5, "-o", tmp_path / "s5")
    assert json.loads((tmp_path / "s5" / "folds.json").read_text())["rows"]["fold"] != rows["fold"]


def test_split_usage_errors(folds, tmp_path):
    root, _ = folds
    result = _cli("split", root / "data.npz", "--folds", 3, "--val", 0.2, "-o", tmp_path / "x", code=2)
    assert "--folds and --val/--test are exclusive" in result.output
    _cli("split", root / "data.npz", "--folds", 1, "-o", tmp_path / "x", code=2)


def test_train_fold_usage_errors(folds, tmp_path):
    root, _ = folds
    result = _cli("train", root / "data.npz", "--fold", root / "folds" / "fold_1", "-o", tmp_path / "r", code=2)
    assert "drop DATA and --val" in result.output
    _cli("train", "-o", tmp_path / "r", code=2)
    result = _cli("train", "--fold", root / "folds", "-o", tmp_path / "r", code=1)  # the split dir, not a fold
    assert "train.npz" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_oof_per_fold_and_pooled_accuracy_by_hand(folds, runs, tmp_path):
    root, _ = folds
    by_hand_right, by_hand_n, seen = 0, 0, []
    for i, run in enumerate(runs, start=1):
        with np.load(run / "oof.npz") as oof:
            val = load_dataset(root / "folds" / f"fold_{i}" / "val.npz")
            assert np.array_equal(oof["original_indices"], val.original_indices)
            assert np.array_equal(oof["labels"], val.labels) and oof["probs"].shape == (len(val), 4)
            by_hand_right += int((oof["probs"].argmax(axis=1) == oof["labels"]).sum())
            by_hand_n += len(oof["labels"])
            seen += oof["original_indices"].tolist()
        assert json.loads((run / "fold.json").read_text())["fold"] == i
        assert (run / "folds.json").read_bytes() == (root / "folds" / "folds.json").read_bytes()
    assert sorted(seen) == list(range(24))
    report = json.loads(_cli("cv-report", *runs, "--json", "--report", tmp_path / "rep").output)
    assert report["n"] == by_hand_n == 24
    assert report["accuracy"] == pytest.approx(by_hand_right / by_hand_n, abs=1e-12)
    per_fold = [f["accuracy"] for f in report["folds"]]
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    assert report["fold_accuracy_mean"] == pytest.approx(np.mean(per_fold)) and report["fold_accuracy_std"] == pytest.approx(np.std(per_fold))
    assert np.array(report["pooled"]["confusion_matrix"]).sum() == 24
    # 4 balanced classes: chance 25%; one epoch on 16 images may not beat 1.5x that, and then the report says so
    near = [w for w in report["warnings"] if "of the chance level 25.00%" in w]
    assert report["chance_level"] == 0.25 and report["near_chance"] == (report["accuracy"] < 0.375) == bool(near)
    assert len(report["warnings"]) == len(near)  # nothing else to warn about
    assert report["coverage"] == {"rows": 24, "covered": 24, "k": 3, "missing_folds": []}
    assert (tmp_path / "rep" / "cv_report.json").is_file() and (tmp_path / "rep" / "confusion_matrix.png").is_file()
    text = _cli("cv-report", *runs).output
    assert "out-of-fold accuracy" in text and "± " in text and "confusion matrix" in text


@pytest.mark.slow
def test_cv_report_refusals_and_coverage_warning(runs, tmp_path):
    twice = _cli("cv-report", runs[0], runs[1], runs[0], code=1).output
    assert "fold 1 given twice" in twice and len(twice.strip().splitlines()) == 1
    other = tmp_path / "other_classes"
    shutil.copytree(runs[1], other)
    (other / "classes.json").write_text(json.dumps({"class_names": ["a", "b", "c", "d"]}))
    mixed = _cli("cv-report", runs[0], other, code=1).output
    assert "differ" in mixed and len(mixed.strip().splitlines()) == 1
    partial = json.loads(_cli("cv-report", runs[0], runs[2], "--json").output)
    assert partial["coverage"]["missing_folds"] == [2] and partial["n"] == 16
    assert any("cover 16 of the 24 rows" in w for w in partial["warnings"])
    no_oof = tmp_path / "no_oof"
    shutil.copytree(runs[2], no_oof)
    (no_oof / "oof.npz").unlink()
    assert "oof.npz: missing" in _cli("cv-report", runs[0], no_oof, code=1).output
