"""Upscaled input (`--input-size`), the winners' 224 px recipe: both families trained at 224 through the CLI, and one
run carried through export (ONNX parity), build-submission, check, validate-preprocessing (TTA flip, 224x224 tensors
captured) and `simulate --shift` in the pinned an2dl-2024 runtime, scoring what the training process computed.
Also the sizes the families refuse or accept (odd, EfficientNetB2's 260, below the downsampling)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main

UPSCALED = 224


def _cli(*args: str):
    result = CliRunner().invoke(main, [*map(str, args)])
    return result.exit_code, result.output


def _save(path, images, labels):
    np.savez(path, images=images, labels=labels.reshape(-1, 1))
    return path


# ---- sizes: what the CLI refuses before any work, what the networks accept (fast) ----------------------------------

@pytest.mark.parametrize("variant", ["convnext_test", "efficientnetv2_test"])
def test_a_size_below_the_family_downsampling_is_a_usage_error_before_training(tmp_path, tiny_npz, variant):
    code, out = _cli("train", tiny_npz, "--model", variant, "--weights", "none", "--input-size", "16", "-o", tmp_path / "run")
    assert code == 2, out
    assert "input_size" in out and ">= 32" in out and "found 16" in out and variant in out, out
    assert not (tmp_path / "run").exists()  # refused while resolving the settings: nothing trained, nothing written
    # the same value from a --config file is a config error (exit 1), as for every other setting
    (tmp_path / "c.toml").write_text(f'model = "{variant}"\nweights = "none"\ninput_size = 16\n')
    code, out = _cli("train", tiny_npz, "--config", tmp_path / "c.toml", "-o", tmp_path / "run")
    assert code == 1 and "c.toml" in out and "found 16" in out, out


def test_a_non_square_size_is_not_an_option_value(tmp_path, tiny_npz):
    """One side for both: the raw images are square and so is every network input; '224x160' is refused by click."""
    code, out = _cli("train", tiny_npz, "--model", "convnext_test", "--input-size", "224x160", "-o", tmp_path / "run")
    assert code == 2 and "--input-size" in out and "224x160" in out, out


@pytest.mark.parametrize("variant", ["convnext_test", "efficientnetv2_test"])
@pytest.mark.parametrize("size", [97, 260])
def test_odd_and_b2_sizes_build_and_take_resized_96px_images(variant, size):
    """97 (odd: ConvNeXt's 4x4 patchify drops the last row and column) and 260 (EfficientNetB2's resolution) build in
    both families; preprocessing resizes raw 96x96 (and non-square) pixels to size x size and the network classifies them."""
    from toolkit.families import build_model
    from toolkit.preprocessing import preprocess
    from toolkit.train.models import model_spec

    model = build_model(model_spec(variant, 3, ["a", "b", "c"], input_size=size))
    assert tuple(model.input.shape) == (None, size, size, 3)
    raw = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3)).astype(np.uint8)
    x = preprocess(raw, size, "bilinear")
    assert x.shape == (2, size, size, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    assert preprocess(raw[:, :, :80], size, "bilinear").shape == (2, size, size, 3)  # non-square raw input too
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


# ---- both families trained at 224 through the CLI; one carried to the pinned grader (slow) ------------------------

@pytest.fixture(scope="module")
def upscaled(tmp_path_factory):
    """upscaled(variant): the run dir of `cbtool train --input-size 224` (1 epoch, 6 images per class of 8 classes,
    2 per class held out in val.npz), made once per variant."""
    from train_data import shapes_dataset

    base = tmp_path_factory.mktemp("upscale")
    data = shapes_dataset(n_per_class=8, num_classes=8, size=96, seed=0)
    held = np.isin(np.arange(len(data)), [np.flatnonzero(data.labels == c)[:2] for c in range(8)])
    train_npz = _save(base / "train.npz", data.images[~held], data.labels[~held])
    val_npz = _save(base / "val.npz", data.images[held], data.labels[held])
    made = {}

    def make(variant: str):
        if variant not in made:
            run = base / variant
            code, out = _cli("train", train_npz, "--val", val_npz, "--model", variant, "--weights", "none", "--epochs", "1",
                             "--batch-size", "16", "--input-size", UPSCALED, "--augment", "none", "--seed", "1", "-o", run, "--json")
            assert code == 0, out
            made[variant] = run
        return made[variant], val_npz

    return make


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["convnext_test", "efficientnetv2_test"])
def test_training_at_224_records_the_size_and_feeds_224px_tensors(upscaled, variant):
    from toolkit.families import build_model

    run, _ = upscaled(variant)
    assert json.loads((run / "preprocessing.json").read_text())["input_size"] == UPSCALED
    assert json.loads((run / "config.json").read_text())["input_size"] == UPSCALED
    spec = json.loads((run / "model_spec.json").read_text())
    assert spec["input_size"] == UPSCALED and tuple(build_model(spec).input.shape) == (None, UPSCALED, UPSCALED, 3)
    assert json.loads((run / "metrics.json").read_text())["epochs_done"] == 1


def _classifier(run):
    """images -> class indices, from the run's best weights in this process, images preprocessed to the run's size."""
    from toolkit.artifacts import RunDir
    from toolkit.families import build_model
    from toolkit.preprocessing import preprocess

    model = build_model(json.loads((run / "model_spec.json").read_text()))
    model.load_weights(RunDir(run).best_weights)
    return lambda images: np.argmax(np.asarray(model(preprocess(images, UPSCALED, "bilinear"), training=False)), axis=1)


@pytest.mark.slow
def test_upscaled_run_exports_builds_validates_and_simulates_in_the_pinned_runtime(upscaled, tmp_path):
    """convnext_test at 224 (the winners' ConvNeXt recipe): ONNX parity; a flip-TTA zip proves byte-identical 224x224
    inputs for both views; a plain zip scores in an2dl-2024 what training computed, on clean and corrupted images."""
    from submission_data import pinned_runtime  # the pinned profile, its venv made (skips without a registry)
    from toolkit.corruptions import corrupt
    from toolkit.data.io import load_dataset

    pinned_runtime("an2dl-2024")
    run, val_npz = upscaled("convnext_test")
    code, out = _cli("export", run, "-o", tmp_path / "export", "--format", "portable,onnx", "--json")
    assert code == 0, out
    onnx = json.loads(out)["parity"]["onnx"]
    assert onnx["max_abs_diff"] <= 1e-4 and onnx["argmax_agreement"] == 1.0, onnx

    flip, plain = tmp_path / "flip.zip", tmp_path / "plain.zip"
    for zip_path, tta in ((flip, "flip"), (plain, "none")):
        code, out = _cli("build-submission", tmp_path / "export", "-o", zip_path, "--profile", "an2dl-2024", "--tta", tta, "--json")
        assert code == 0, out
        assert json.loads(out)["manifest"]["model"]["input_size"] == UPSCALED
        code, out = _cli("check", zip_path, "--profile", "an2dl-2024", "--json")
        assert code == 0 and json.loads(out)["ok"], out

    code, out = _cli("validate-preprocessing", flip, "--run", run, "--profile", "an2dl-2024", "--images", 4, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["tta_views"] == 2 and report["input_size"] == UPSCALED, out
    assert {tuple(i["found_shape"]) for i in report["inputs"] if i["input"] == "probe_uint8"} == {(4, UPSCALED, UPSCALED, 3)}

    code, out = _cli("simulate", plain, "--data", val_npz, "--profile", "an2dl-2024", "--shift", "--shift-images", 0, "--json")
    sim = json.loads(out)
    assert code == 0, json.dumps(sim.get("failure") or sim.get("error"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert sim["scores"]["accuracy"] == pytest.approx(metrics["accuracy"]), (sim["scores"], metrics)
    # the suite at 224: every corrupted set scores what this process computes from the same corrupted raw pixels
    held, classify = load_dataset(val_npz), _classifier(run)
    assert len(set(classify(held.images).tolist())) > 1  # the network tells images apart: a resize bug would show
    table = sim["shift"]["table"]
    assert sim["shift"]["images_per_set"] == len(held.labels) and sum(len(s) for s in table.values()) == 55
    for family, severities in table.items():
        for severity, accuracy in severities.items():
            corrupted = corrupt(held.images, family, int(severity), 0).astype(np.uint8)
            expected = float(np.mean(classify(corrupted) == held.labels))
            assert accuracy == pytest.approx(expected), (family, severity, accuracy, expected)
