"""Ensemble submissions: several runs (two families, three input sizes, their own TTA) in one model.py.

The reference is computed here, in the test process, from toolkit's own pieces (build_model + the member's weights,
preprocess at the member's size, toolkit.tta views, the weighted mean of the members' view-averaged softmax); the zip
runs the grader's way (the sandbox child, pinned runtimes where named) and must predict the same classes.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from export_data import CLASSES, make_run_dir
from submission_data import any_class_count, pinned_runtime, patch_model_py
from toolkit.cli import main
from toolkit.runtime.profiles import get_profile
from toolkit.submission.build import BuildOptions, build_ensemble

MEMBERS = (("convnext_test", 96, "d4"), ("efficientnetv2_test", 64, "flip"), ("convnext_test", 128, "none"))
WEIGHTS = (2.0, 1.0, 1.0)


@functools.lru_cache(maxsize=None)
def _exports() -> tuple[Path, list[Path]]:
    """Three run dirs (random weights: convnext_test 96 px, efficientnetv2_test 64 px, convnext_test 128 px), each
    exported (portable, onnx)."""
    from toolkit.export import export_run

    base = Path(tempfile.mkdtemp(prefix="cbtool-ensemble-"))
    atexit.register(shutil.rmtree, base, True)
    exports = []
    for i, (variant, size, _tta) in enumerate(MEMBERS, 1):
        run = make_run_dir(base / f"run{i}", variant, input_size=size, n_probe=8, seed=i)
        export_run(run, base / f"export{i}", ["portable", "onnx"])
        exports.append(base / f"export{i}")
    return base, exports


def _options(fmt: str = "portable") -> BuildOptions:
    return BuildOptions(fmt=fmt, member_tta=tuple(m[2] for m in MEMBERS), weights=WEIGHTS)


def _images(n: int = 24, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def _reference(exports: list[Path], images: np.ndarray, only: int | None = None) -> np.ndarray:
    """The ensemble's probabilities (or member `only`'s view-averaged softmax), computed from toolkit's own pieces."""
    from toolkit.families import build_model, family_of
    from toolkit.preprocessing import preprocess
    from toolkit.tta import tta_views

    total = np.zeros((len(images), len(CLASSES)))
    weights = np.asarray(WEIGHTS) / sum(WEIGHTS)
    for index, (export, (_variant, size, tta), weight) in enumerate(zip(exports, MEMBERS, weights)):
        if only is not None and index != only:
            continue
        spec = json.loads((export / "model_spec.json").read_text())
        model = build_model(spec)
        family_of(spec["variant"]).arch_module().load_weights_npz(model, str(export / "weights.npz"))
        views = tta_views(preprocess(images, size, "bilinear"), tta)
        probs = sum(np.asarray(model(v, training=False), np.float64) for v in views) / len(views)
        total += (1.0 if only is not None else weight) * probs
    return total


def _assert_same_classes(found: np.ndarray, probs: np.ndarray) -> None:
    """Equal argmax wherever the reference's top two differ by more than float noise between TF builds."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    assert clear.sum() >= len(probs) - 1
    np.testing.assert_array_equal(np.asarray(found)[clear], probs.argmax(1)[clear])


def test_one_zip_lists_every_member_with_its_hashes_and_builds_the_same_bytes(tmp_path):
    _base, exports = _exports()
    profile = get_profile("an2dl-2024")
    first = build_ensemble(exports, tmp_path / "a.zip", profile, _options())
    second = build_ensemble(exports, tmp_path / "b.zip", profile, _options())
    assert first.check.ok, first.check.issues
    assert first.sha256 == second.sha256
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["model.py", "member1_weights.npz", "member2_weights.npz", "member3_weights.npz",
                                 "manifest.json"]
        model_py = zf.read("model.py").decode()
    manifest = first.manifest
    members = manifest["members"]
    assert [m["model"]["variant"] for m in members] == [m[0] for m in MEMBERS]
    assert [m["preprocessing"]["input_size"] for m in members] == [m[1] for m in MEMBERS]
    assert [m["tta"] for m in members] == [m[2] for m in MEMBERS] and [m["tta_views"] for m in members] == [8, 2, 1]
    assert [m["weight"] for m in members] == [0.5, 0.25, 0.25]
    for member in members:
        assert member["weights_sha256"] == manifest["files"][member["weights_file"]]["sha256"]
        assert len(member["model_spec_sha256"]) == 64 and member["source"]
    assert manifest["model"] == {"ensemble": 3, "num_classes": 8, "input_layer": "cbtool_input_norm"}
    assert model_py.count("# ---- BEGIN toolkit/arch.py") == 1  # both families are one embedded file
    assert "MEMBER = None" in model_py


@pytest.mark.parametrize("profile_name", ["an2dl-2024", "an2dl-2023"])
def test_the_pinned_runtimes_predict_the_weighted_mean_of_the_members(tmp_path, profile_name):
    from toolkit.runtime.sandbox import run_submission

    _base, exports = _exports()
    profile = pinned_runtime(profile_name)
    profile = any_class_count(profile) if profile_name == "an2dl-2023" else profile
    result = build_ensemble(exports, tmp_path / "e.zip", profile, _options())
    assert result.check.ok, result.check.issues
    images = _images()
    x = images.astype(profile.contract.dtypes[0])
    outcome = run_submission(tmp_path / "e.zip", profile, {"all": x, "alone": x},
                             overrides={"alone": {"MEMBER": 1}})  # the efficientnetv2 member by itself
    assert outcome.status == "ok", outcome.failure
    _assert_same_classes(outcome.outputs["all"], _reference(exports, images))
    _assert_same_classes(outcome.outputs["alone"], _reference(exports, images, only=1))


def test_onnx_members_in_the_localpinned_runtime(tmp_path):
    from toolkit.runtime.sandbox import run_submission

    _base, exports = _exports()
    profile = get_profile("local")
    result = build_ensemble(exports, tmp_path / "o.zip", profile, _options("onnx"))
    assert result.check.ok, result.check.issues
    assert [m["weights_file"] for m in result.manifest["members"]] == [f"member{i}_model.onnx" for i in (1, 2, 3)]
    images = _images(12)
    outcome = run_submission(tmp_path / "o.zip", profile, {"x": images})
    assert outcome.status == "ok", outcome.failure
    _assert_same_classes(outcome.outputs["x"], _reference(exports, images))


@pytest.mark.parametrize("extra, expected_code, words", [
    (["--tta", "d4,flip"], 2, "one mode or one per member (3)"),
    (["--weights", "1,2"], 2, "one weight per member (3)"),
    (["--weights", "1,-1,1"], 2, "non-negative"),
    (["--weights", "1,x,1"], 2, "comma-separated numbers"),
    (["--tta", "auto,d4,none"], 2, "--tta auto chooses one network's mode"),
])
def test_bad_ensemble_options_are_usage_errors_and_write_nothing(tmp_path, extra, expected_code, words):
    _base, exports = _exports()
    out = tmp_path / "x.zip"
    result = CliRunner().invoke(main, ["build-submission", *map(str, exports), "-o", str(out), *extra])
    assert result.exit_code == expected_code, result.output
    assert words in result.output and not out.exists()


def test_ensemble_refusals_name_the_member(tmp_path):
    base, exports = _exports()
    runner = CliRunner()
    out = tmp_path / "x.zip"
    twice = runner.invoke(main, ["build-submission", str(exports[0]), str(exports[0]), "-o", str(out)])
    assert twice.exit_code == 2 and "given twice" in twice.output
    single = runner.invoke(main, ["build-submission", str(exports[0]), "-o", str(out), "--weights", "1"])
    assert single.exit_code == 2 and "for an ensemble" in single.output
    other = shutil.copytree(exports[1], tmp_path / "other")
    classes = json.loads((other / "classes.json").read_text())
    (other / "classes.json").write_text(json.dumps({**classes, "class_names": list(reversed(CLASSES))}))
    spec = json.loads((other / "model_spec.json").read_text())
    (other / "model_spec.json").write_text(json.dumps({**spec, "class_names": list(reversed(CLASSES))}))
    mismatch = runner.invoke(main, ["build-submission", str(exports[0]), str(other), "-o", str(out)])
    assert mismatch.exit_code == 1 and f"{other}: predicts classes" in mismatch.output
    assert "same order" in mismatch.output and not out.exists()


def test_validate_preprocessing_proves_every_member_and_names_the_one_that_differs(tmp_path):
    base, exports = _exports()
    profile = get_profile("local")
    build_ensemble(exports, tmp_path / "e.zip", profile, _options())
    runner = CliRunner()
    runs = [str(base / f"run{i}") for i in (1, 2, 3)]
    ok = runner.invoke(main, ["--json", "validate-preprocessing", str(tmp_path / "e.zip"), "--profile", "local",
                              *[a for r in runs for a in ("--run", r)]])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert [m["input_size"] for m in report["members"]] == [96, 64, 128]
    assert all(m["ok"] and m["identical"] for m in report["members"])
    assert [m["tta_views"] for m in report["members"]] == [8, 2, 1]
    swapped = runner.invoke(main, ["validate-preprocessing", str(tmp_path / "e.zip"), "--profile", "local",
                                   "--run", runs[0], "--run", runs[2], "--run", runs[1]])
    assert swapped.exit_code == 2 and "manifest's member order" in swapped.output
    patch_model_py(tmp_path / "e.zip", tmp_path / "bad.zip", "'resize': 'bilinear', 'weights_file': 'member2_weights.npz'",
                   "'resize': 'nearest', 'weights_file': 'member2_weights.npz'")
    bad = runner.invoke(main, ["validate-preprocessing", str(tmp_path / "bad.zip"), "--profile", "local",
                               *[a for r in runs for a in ("--run", r)]])
    assert bad.exit_code == 3, bad.output
    assert "2 of 3 ensemble members" in bad.output and "member2: resize method" in bad.output


def test_simulate_scores_each_member_beside_the_ensemble(tmp_path):
    from toolkit.runtime.simulate import SimulateOptions, simulate

    _base, exports = _exports()
    profile = get_profile("local")
    build_ensemble(exports, tmp_path / "e.zip", profile, _options())
    images = _images(40, seed=9)
    labels = _reference(exports, images).argmax(1)
    labels[::3] = (labels[::3] + 1) % len(CLASSES)  # a held-out set the ensemble gets two thirds of
    np.savez(tmp_path / "held.npz", images=images, labels=labels)
    result = simulate(tmp_path / "e.zip", tmp_path / "held.npz", profile, SimulateOptions())
    assert result.ok, result.failure
    table = result.members
    for index, row in enumerate(table["members"]):
        expected = float(np.mean(_reference(exports, images, only=index).argmax(1) == labels))
        assert row["clean"] == pytest.approx(expected, abs=1.5 / len(labels))
    assert table["ensemble"]["clean"] == result.scores["accuracy"] == pytest.approx(2 / 3, abs=0.02)
    assert "members_predict_s" in result.timing


@pytest.mark.slow
def test_simulate_shift_scores_each_member_on_every_corrupted_set(tmp_path):
    from toolkit.runtime import shift as shift_suite
    from toolkit.runtime.simulate import SimulateOptions, simulate

    _base, exports = _exports()
    profile = get_profile("local")
    build_ensemble(exports, tmp_path / "e.zip", profile, _options())
    images = _images(16, seed=11)
    np.savez(tmp_path / "held.npz", images=images, labels=_reference(exports, images).argmax(1))
    result = simulate(tmp_path / "e.zip", tmp_path / "held.npz", profile, SimulateOptions(shift=True, shift_images=6))
    assert result.ok, result.failure
    table = result.members
    assert table["ensemble"]["shifted"] == result.shift["mean_accuracy"]
    for row in table["members"]:
        assert set(row["shift_by_family"]) == set(shift_suite.CORRUPTIONS)
        assert row["shifted"] == pytest.approx(np.mean(list(row["shift_by_family"].values())))
    assert table["members_mean"]["shifted"] == pytest.approx(np.mean([r["shifted"] for r in table["members"]]))


def test_int8_members_dequantize_in_model_py_and_keep_the_ensemble_s_answers(tmp_path):
    from toolkit.runtime.sandbox import run_submission

    _base, exports = _exports()
    profile = get_profile("local")
    options = _options()
    options.int8 = True
    result = build_ensemble(exports, tmp_path / "q.zip", profile, options)
    assert result.check.ok, result.check.issues
    float_zip = build_ensemble(exports, tmp_path / "f.zip", profile, _options())
    assert result.bytes < 0.5 * float_zip.bytes
    members = result.manifest["members"]
    assert result.manifest["int8"] and all(m["int8"] and m["quantization"]["argmax_agreement"] >= 0.95 for m in members)
    with zipfile.ZipFile(tmp_path / "q.zip") as zf:
        model_py = zf.read("model.py").decode()
    assert "# ---- BEGIN toolkit/int8.py" in model_py and "decode=dequantize_arrays" in model_py
    images = _images(16)
    outcome = run_submission(tmp_path / "q.zip", profile, {"x": images})
    assert outcome.status == "ok", outcome.failure
    probs = _reference(exports, images)
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.02  # int8 moves probabilities by ~1e-2 at most on these nets
    assert clear.sum() >= len(images) // 2
    np.testing.assert_array_equal(outcome.outputs["x"][clear], probs.argmax(1)[clear])


def test_a_member_alone_is_its_own_softmax_even_at_weight_zero(tmp_path):
    from toolkit.runtime.sandbox import run_submission

    _base, exports = _exports()
    profile = get_profile("local")
    options = _options()
    options.weights = (1.0, 0.0, 1.0)
    build_ensemble(exports, tmp_path / "z.zip", profile, options)
    images = _images(12)
    outcome = run_submission(tmp_path / "z.zip", profile, {"alone": images}, overrides={"alone": {"MEMBER": 1}})
    assert outcome.status == "ok", outcome.failure
    _assert_same_classes(outcome.outputs["alone"], _reference(exports, images, only=1))


def test_plan_refuses_bad_ensemble_options_before_timing_anything(tmp_path):
    _base, exports = _exports()
    result = CliRunner().invoke(main, ["build-submission", *map(str, exports), "-o", str(tmp_path / "p.zip"),
                                       "--tta", "d4,flip", "--plan", "1000"])
    assert result.exit_code == 2 and "one mode or one per member (3)" in result.output
    assert "timing" not in result.output and not (tmp_path / "p.zip").exists()
