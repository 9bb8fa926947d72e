"""toolkit.arch and toolkit.train.models: the core-layer ConvNeXt, its weights file, weights files and the spec."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from toolkit.errors import ConfigError
from toolkit.families import get_variant
from toolkit.train.models import create_model, model_spec

CLASSES = ["a", "b", "c"]


def _perturbed(model, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.standard_normal(w.shape).astype(np.float32) * scale for w in model.get_weights()])
    return model


def _images(n=4, size=96, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_arch_source_is_self_contained():
    source = (ROOT / "toolkit" / "arch.py").read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"numpy", "tensorflow"}, imports


def test_layers_names_and_input_normalisation():
    from toolkit.arch import INPUT_LAYER_NAME, build_model

    spec = model_spec("convnext_test", 3, CLASSES)
    model = build_model(spec)
    names = [layer.name for layer in model.layers]
    assert names[1] == INPUT_LAYER_NAME == "cbtool_input_norm"
    assert names[2:4] == ["stem_conv", "stem_ln"]
    assert "stage_2_block_1_pw2" in names and "downsampling_2_conv" in names
    assert names[-4:] == ["head_gap", "head_ln", "head_dropout", "head_dense"]
    assert not any("Conv2D" == type(l).__name__ and l.groups > 1 for l in model.layers if hasattr(l, "groups"))
    x = _images(2)
    normed = np.asarray(model.get_layer(INPUT_LAYER_NAME)(x))
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(normed, (x - mean) / std, atol=1e-5)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert model.get_layer("head_dense").get_config()["activation"] == "softmax"


def test_npz_round_trip_fp16_and_mismatch(tmp_path):
    from toolkit.arch import build_model, load_weights_npz, save_weights_npz

    spec = model_spec("convnext_test", 3, CLASSES)
    model = _perturbed(build_model(spec))
    x = _images(3)
    expected = model.predict(x, verbose=0)
    save_weights_npz(model, tmp_path / "w.npz")
    save_weights_npz(model, tmp_path / "w16.npz", dtype="float16")
    fresh = build_model(spec)
    load_weights_npz(fresh, tmp_path / "w.npz")
    assert np.abs(fresh.predict(x, verbose=0) - expected).max() == 0.0
    with np.load(tmp_path / "w16.npz") as data:
        assert data["stem_conv/0"].dtype == np.float16
    load_weights_npz(fresh, tmp_path / "w16.npz")
    assert all(w.dtype == np.float32 for w in fresh.get_weights())
    assert np.abs(fresh.predict(x, verbose=0) - expected).max() < 5e-3
    other = build_model(model_spec("convnext_test", 4, CLASSES + ["d"]))
    with pytest.raises(ValueError, match="head_dense/0.*shape"):
        load_weights_npz(other, tmp_path / "w.npz")


def test_onnx_friendly_twin_computes_the_same_function():
    from toolkit.arch import build_model

    spec = model_spec("convnext_test", 3, CLASSES)
    model = _perturbed(build_model(spec), scale=0.2)
    twin = build_model(spec, onnx_friendly=True)
    twin.set_weights(model.get_weights())
    x = _images(4)
    assert np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0)).max() < 1e-5


def test_local_cbtool_weights_file(tmp_path):
    spec = model_spec("convnext_test", 3, CLASSES)
    source = _perturbed(create_model(spec))
    source.save_weights(str(tmp_path / "best.weights.h5"))
    loaded = create_model(spec, weights=str(tmp_path / "best.weights.h5"))
    x = _images(2)
    assert np.abs(loaded.predict(x, verbose=0) - source.predict(x, verbose=0)).max() == 0.0
    with pytest.raises(ConfigError, match="no such file"):
        create_model(spec, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ConfigError, match="no ImageNet weights for 'convnext_test'"):
        create_model(spec, weights="imagenet")


@pytest.mark.parametrize("variant", ["convnext_tiny", "efficientnetv2_b0"])
def test_offline_imagenet_message(tmp_path, variant):
    """In a child process with KERAS_HOME in a temp dir and an unreachable proxy (so it is offline even when the
    machine is not): the error names the cache path, Keras' hash of the file (ConvNeXt sha256, EfficientNetV2 md5),
    and the two ways out."""
    script = (
        "import time\n"
        "from toolkit.errors import ConfigError\n"
        "from toolkit.train.models import create_model, model_spec\n"
        f"spec = model_spec({variant!r}, 2, ['a', 'b'])\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    create_model(spec, weights='imagenet')\n"
        "except ConfigError as exc:\n"
        "    print('MESSAGE', exc)\n"
        "    print('SECONDS', time.perf_counter() - t)\n"
    )
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "kh"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               TF_CPP_MIN_LOG_LEVEL="2")
    (tmp_path / "kh").mkdir()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "MESSAGE" in proc.stdout, proc.stderr[-2000:]
    assert "Downloading" not in proc.stdout  # Keras' download chatter goes to stderr: stdout stays pure for --json
    message = proc.stdout.split("MESSAGE", 1)[1]
    weights = get_variant(variant).imagenet
    assert str(tmp_path / "kh" / "models" / weights.file) in message
    assert f"{weights.algorithm} {weights.file_hash}" in message and weights.url in message
    assert "--weights PATH" in message


def test_model_spec_from_the_registry():
    """(The registry itself, and the ImageNet mapping from keras.applications: tests/test_families.py.)"""
    spec = model_spec("convnext_small", 2, ["x", "y"], input_size=128, dropout=0.3)
    assert spec == {"arch_version": 1, "variant": "convnext_small", "depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768],
                    "input_size": 128, "num_classes": 2, "dropout": 0.3, "class_names": ["x", "y"]}
    with pytest.raises(ConfigError, match="unknown variant 'convnext_huge'"):
        model_spec("convnext_huge", 2, ["x", "y"])
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        model_spec("convnext_test", 3, ["x", "y"])
