"""EfficientNetV2 through the family registry: the core-layer network (keras.applications' graph and names), its
input rescaling, its ONNX twin and export, the BatchNorm freezing rule, and the tiny variant trained end to end into
submissions that score in the graders' pinned runtimes what the training process computed.

(The ImageNet mapping of every pretrained variant against keras.applications: tests/test_families.py.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from export_data import make_run_dir
from toolkit.families import family_of, get_variant
from toolkit.train.models import model_spec

CLASSES = ["a", "b", "c"]


def _images(n=4, size=96, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_layers_follow_keras_applications_names_and_the_input_is_rescaled_inside():
    from toolkit.arch import INPUT_LAYER_NAME, build_model

    model = build_model(model_spec("efficientnetv2_test", 3, CLASSES))
    names = [layer.name for layer in model.layers]
    assert names[1] == INPUT_LAYER_NAME and names[2:5] == ["stem_conv", "stem_bn", "stem_activation"]
    for name in ("block1a_project_conv", "block1b_drop", "block1b_add", "block2a_expand_conv", "block3a_dwconv2",
                 "block3a_se_reduce", "block3a_se_excite", "block3b_add", "top_conv", "top_bn"):
        assert name in names, name
    assert "block1a_drop" not in names  # keras' first block has drop rate 0: no layer
    assert names[-3:] == ["head_gap", "head_dropout", "head_dense"]
    assert model.get_layer("block1b_drop").noise_shape == (None, 1, 1, 1)
    assert model.get_layer("block3a_bn").momentum == 0.9 and model.get_layer("block3a_bn").epsilon == 1e-3
    # S/M/L (and the test variant): x/128 - 1; B0: ImageNet mean/std on x/255, both from the spec's input_rescale
    x = _images(2)
    np.testing.assert_allclose(np.asarray(model.get_layer(INPUT_LAYER_NAME)(x)), x / 128.0 - 1, atol=1e-6)
    b0 = build_model(model_spec("efficientnetv2_b0", 3, CLASSES, input_size=32))
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    x = _images(2, 32)
    np.testing.assert_allclose(np.asarray(b0.get_layer(INPUT_LAYER_NAME)(x)), (x - mean) / std, atol=1e-5)
    assert model_spec("efficientnetv2_s", 2, ["x", "y"])["input_rescale"] == [[1 / 128] * 3, [-1.0] * 3]


def test_onnx_friendly_twin_computes_the_same_function():
    from toolkit.arch import build_model

    spec = model_spec("efficientnetv2_test", 3, CLASSES)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.standard_normal(w.shape).astype(np.float32) * 0.1 for w in model.get_weights()])
    twin = build_model(spec, onnx_friendly=True)
    twin.set_weights(model.get_weights())
    x = _images(4)
    assert np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0)).max() < 1e-5


def test_frozen_batchnorm_runs_in_inference_mode_and_stages_unfreeze_from_the_top():
    """Phase 1: only the head trains and every BatchNorm uses its moving statistics even with training=True (so a
    fit step leaves them as they were); phase 2 unfreeze=1: the last stage and the top conv; "all": everything."""
    import keras

    from toolkit.train.models import create_model

    model = create_model(model_spec("efficientnetv2_test", 3, CLASSES, dropout=0.0))
    total = len(model.trainable_weights)
    rule = family_of("efficientnetv2_test").module()
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:  # statistics away from their init, so inference and batch normalisation differ
        bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.3, np.float32))
    rule.set_trainable(model, 1)
    assert not any(bn.trainable for bn in bns) and model.get_layer("head_dense").trainable
    stem_in = keras.Model(model.input, model.get_layer("stem_conv").output)(_images(4))
    bn = model.get_layer("stem_bn")
    np.testing.assert_allclose(np.asarray(bn(stem_in, training=True)), np.asarray(bn(stem_in, training=False)), atol=1e-6)
    before = [np.asarray(b.moving_mean).copy() for b in bns]
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(_images(8), keras.utils.to_categorical(np.arange(8) % 3, 3), batch_size=4, epochs=1, verbose=0)
    assert all(np.array_equal(b, np.asarray(after.moving_mean)) for b, after in zip(before, bns))
    rule.set_trainable(model, 2, unfreeze=1)
    assert model.get_layer("block5a_bn").trainable and model.get_layer("top_bn").trainable
    assert not model.get_layer("block4a_bn").trainable and not model.get_layer("stem_conv").trainable
    rule.set_trainable(model, 2, "all")
    assert all(bn.trainable for bn in bns) and len(model.trainable_weights) == total


def test_exports_in_every_format_with_onnx_parity(tmp_path):
    from toolkit.export import export_run

    run = make_run_dir(tmp_path / "run", variant="efficientnetv2_test", n_probe=8)
    manifest = export_run(run, tmp_path / "export", ["portable", "keras", "onnx"]).to_dict()
    onnx = manifest["parity"]["onnx"]
    assert onnx["argmax_agreement"] == 1.0 and onnx["max_abs_diff"] <= 1e-4, onnx
    assert manifest["parity"]["portable"]["weights_npz"]["max_abs_diff"] <= 1e-5
    assert manifest["parity"]["keras"]["max_abs_diff"] <= 1e-5
    assert manifest["model"]["variant"] == "efficientnetv2_test" and manifest["model"]["input_layer"] == "cbtool_input_norm"
    assert {"model.onnx", "model.keras", "weights.npz", "model.weights.h5"} <= set(manifest["files"])


# ---- the tiny variant trained, exported and simulated in both pinned runtimes (slow: real training, two venvs) ----

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """trained(K): efficientnetv2_test trained for 2 epochs on 8 synthetic images per class of K classes (each grader
    scores its own count: 8 in 2024, 2 in 2023), its validation split saved as held-out data; made once per K."""
    from train_data import shapes_dataset
    from toolkit.train.config import resolve_config
    from toolkit.train.fit import split_validation, train

    made = {}

    def make(num_classes: int):
        if num_classes not in made:
            base = tmp_path_factory.mktemp(f"effnet{num_classes}")
            data = shapes_dataset(n_per_class=max(8, 48 // num_classes), num_classes=num_classes, size=96, seed=0)
            config = resolve_config(overrides=dict(
                model="efficientnetv2_test", weights="none", epochs="2", batch_size=16, lr1=3e-3, lr2=3e-3,
                warmup_epochs=0, augment="none", patience=0, val_fraction=0.25, seed=1, probe_size=16))
            assert train(data, None, config, base / "run", verbose=False).completed
            _, val = split_validation(data, None, config)
            np.savez(base / "heldout.npz", images=val.images, labels=val.labels, class_names=np.array(val.class_names))
            made[num_classes] = base
        return made[num_classes]

    return make


def _simulate(zip_path, data, profile: str) -> dict:
    from toolkit.cli import main

    result = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(data), "--profile", profile, "--json"])
    out = json.loads(result.output)
    assert result.exit_code == 0, json.dumps(out.get("failure") or out.get("error"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("profile_name", ["an2dl-2024", "an2dl-2023"])
def test_trained_submission_scores_in_the_pinned_runtime_what_training_computed(trained, tmp_path, profile_name):
    """train -> export (every format) -> build-submission -> validate-preprocessing and simulate in the grader's
    runtime: the accuracy equals the one the training process wrote in metrics.json for the same validation images."""
    from toolkit.export import export_run
    from toolkit.submission.build import build_submission
    from toolkit.submission.validate import validate_preprocessing

    from submission_data import pinned_runtime  # the pinned profile, its venv made (skips without a registry)

    profile = pinned_runtime(profile_name)
    trained = trained(profile.contract.num_classes)
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    export = tmp_path / "export"
    manifest = export_run(trained / "run", export, ["portable", "keras", "onnx"]).to_dict()
    assert manifest["parity"]["onnx"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["onnx"]["argmax_agreement"] == 1.0
    zip_path = tmp_path / "s.zip"
    assert build_submission(export, zip_path, profile).check.ok
    report = validate_preprocessing(zip_path, trained / "run", profile, n_images=4)
    assert report.ok and "'cbtool_input_norm'" in report.capture_target, report.to_dict()  # the input rescaling is inside
    out = _simulate(zip_path, trained / "heldout.npz", profile_name)
    from toolkit.runtime.venv import find_venv

    assert out["sandbox"]["python"] == str(find_venv(profile.name, list(profile.packages)))  # the pinned venv ran it
    assert out["scores"]["accuracy"] == pytest.approx(metrics["accuracy"]), (out["scores"], metrics)
    by_input = list(out["scores_by_input"].values())
    assert all(score == by_input[0] for score in by_input), out["scores_by_input"]  # every dtype the grader may feed


@pytest.mark.slow
def test_trained_onnx_submission_scores_what_training_computed(trained, tmp_path):
    """The onnx format in a local child (onnxruntime, no TensorFlow): the same accuracy as training."""
    from toolkit.export import export_run
    from toolkit.runtime.profiles import local_profile
    from toolkit.submission.build import BuildOptions, build_submission

    trained = trained(8)
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    export_run(trained / "run", tmp_path / "export", ["portable", "onnx"])
    zip_path = tmp_path / "onnx.zip"
    assert build_submission(tmp_path / "export", zip_path, local_profile(), BuildOptions(fmt="onnx")).check.ok
    out = _simulate(zip_path, trained / "heldout.npz", "local")
    assert out["scores"]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_imagenet_weights_offline_name_keras_file_and_hash():
    """EfficientNetV2 files are checked by Keras' md5 (its own WEIGHTS_HASHES); the registry says which algorithm."""
    weights = get_variant("efficientnetv2_s").imagenet
    assert weights.file == "efficientnetv2-s_notop.h5" and weights.algorithm == "md5" and len(weights.file_hash) == 32
    assert get_variant("convnext_xlarge").imagenet.algorithm == "sha256"
