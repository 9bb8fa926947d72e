"""`build-submission --from-keras`: a notebook's keras.applications model becomes a submission that scores, in the
graders' pinned runtimes, exactly what the original model computes.

The notebook model: a keras.applications backbone (weights=None) + RandomFlip + Dropout + a Dense head fitted in
closed form on half of a small held-out set (decisive, diverse predictions with some errors). EfficientNetV2B0 is
saved as `.keras` by this venv's Keras 3.15 (preprocessing inside the network: `--preprocess raw`) and as `.h5` by
TF 2.15 in the an2dl-2023 runtime (`include_preprocessing=False`, trained on x / 255: `--preprocess scale:1/255`);
each becomes a submission for an2dl-2024 (Keras 3.4.1) and an2dl-2023 (tf.keras 2.15) that passes `check` and scores
in `simulate` what the original computes: its argmax in this process for the `.keras`, in TF 2.15 (the Keras that
saved it) for the `.h5`. MobileNetV3Small (Keras 3 ops inside: `x + 3.0`) converts for an2dl-2024 and is refused,
by layer, for Keras 2.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from submission_data import any_class_count_profiles

from toolkit.cli import main
from toolkit.errors import RuntimeProfileError, SubmissionError
from toolkit.submission import keras_config
from toolkit.submission_zip import SubmissionZip

# Runs with either Keras: `tensorflow.keras` is Keras 3 in this venv and tf.keras 2.15 in the an2dl-2023 runtime.
NOTEBOOK = r'''
import sys

import numpy as np
from tensorflow import keras

out, data, prep, arch = sys.argv[1:5]
keras.utils.set_random_seed(0)
d = np.load(data)
x, y = d["x"], d["y"].astype(int)
raw = prep == "raw"
inp = keras.Input((64, 64, 3))
h = keras.layers.RandomFlip("horizontal")(inp)
base = getattr(keras.applications, arch)(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg",
                                         include_preprocessing=raw)
h = keras.layers.Dropout(0.2)(base(h))
model = keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="head")(h))
xin = x.astype("float32") if raw else x.astype("float32") / 255.0
feats = np.asarray(base(xin[:24], training=False), dtype=np.float64)
mu, sd = feats.mean(0), feats.std(0) + 1e-6
w, *_ = np.linalg.lstsq((feats - mu) / sd, np.eye(4)[y[:24]] * 8.0 - 4.0, rcond=None)
model.get_layer("head").set_weights([(w / sd[:, None]).astype("float32"), (-(mu / sd) @ w).astype("float32")])
model.save(out)
np.save(out + ".probs.npy", np.asarray(model(xin, training=False)))
'''
ENV = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _runtime(name: str) -> str:
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python

    try:
        return runtime_python(get_profile(name))
    except RuntimeProfileError as exc:
        if "registry reachable" in str(exc):
            pytest.skip(f"cannot create the {name} runtime venv: {exc}")
        raise


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """48 tinted-noise 64x64 images of 4 classes (generic npz schema)."""
    base = tmp_path_factory.mktemp("heldout")
    rng = np.random.default_rng(1)
    y = np.arange(48) % 4
    tint = np.array([[130, 120, 120], [120, 130, 120], [120, 120, 130], [128, 128, 112]])
    x = np.clip(rng.normal(0, 60, (48, 64, 64, 3)) + tint[y][:, None, None, :], 0, 255).astype(np.uint8)
    np.savez(base / "heldout.npz", x=x, y=y)
    return base / "heldout.npz", y


def _notebook(python: str, dest: Path, heldout: Path, prep: str, arch: str) -> Path:
    """Run NOTEBOOK with `python`: the model saved at `dest`, its probabilities on the held-out set beside it."""
    (dest.parent / "notebook.py").write_text(NOTEBOOK)
    proc = subprocess.run([python, str(dest.parent / "notebook.py"), str(dest), str(heldout), prep, arch],
                          capture_output=True, text=True, cwd=dest.parent, env={**ENV, "HOME": str(dest.parent)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory, heldout) -> Path:
    import sys

    return _notebook(sys.executable, tmp_path_factory.mktemp("mobilenet") / "model.keras", heldout[0], "raw", "MobileNetV3Small")


@pytest.fixture(scope="module")
def notebook(tmp_path_factory, heldout) -> dict:
    """EfficientNetV2B0 saved as .keras by this Keras and as .h5 by TF 2.15."""
    import sys

    base = tmp_path_factory.mktemp("notebook")
    return {"heldout": heldout[0], "y": heldout[1],
            "keras": _notebook(sys.executable, base / "model.keras", heldout[0], "raw", "EfficientNetV2B0"),
            "h5": _notebook(_runtime("an2dl-2023"), base / "model.h5", heldout[0], "scale", "EfficientNetV2B0")}


def _cli(*args) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*map(str, args), "--json"])
    return result.exit_code, json.loads(result.stdout)


def _build_and_simulate(model: Path, heldout: Path, spec: str, profile: str, tmp_path: Path) -> tuple[dict, dict]:
    """build-submission --from-keras, then validate-preprocessing --preprocess and simulate on the zip it wrote.
    The notebook models have 4 classes at 64 px: `profile`'s twin without the contract's class count and image shape
    (same runtime) holds them to everything else."""
    out = tmp_path / f"{model.stem}-{profile}.zip"
    twin = ("--profile", f"{profile}-any", "--profiles-file", any_class_count_profiles(tmp_path / "any.toml", profile))
    code, built = _cli("build-submission", "--from-keras", model, "--preprocess", spec, "--strip-augmentation",
                       "--data", heldout, *twin, "-o", out)
    assert code == 0, built
    assert built["check"]["ok"], built["check"]
    code, validated = _cli("validate-preprocessing", out, "--preprocess", spec, "--data", heldout, "--images", "4", *twin)
    assert code == 0 and validated["ok"], validated  # model.py feeds the network what the spec declares
    code, simulated = _cli("simulate", out, "--data", heldout, *twin)
    assert code == 0, simulated
    return built, simulated


def _assert_scores_the_original(simulated: dict, y: np.ndarray, original_argmax: np.ndarray) -> None:
    from toolkit.runtime.scoring import score

    expected = score(y, original_argmax, simulated["class_names"])
    assert simulated["status"] == "ok"
    assert simulated["scores"]["accuracy"] == expected["accuracy"]
    assert simulated["scores"]["confusion_matrix"] == expected["confusion_matrix"]
    assert 0.25 < expected["accuracy"] < 1.0  # decisive but imperfect: a wrong class or order would show


def _argmax_here(model: Path, heldout: Path) -> np.ndarray:
    """The original's predictions in this process (Keras 3.15), raw pixels in (the network rescales itself)."""
    import keras

    original = keras.saving.load_model(model, compile=False)
    return np.argmax(np.asarray(original(np.load(heldout)["x"].astype("float32"), training=False)), axis=1)


def _assert_converted(built: dict, native: str, target: str) -> None:
    conversion = built["conversion"]
    assert conversion["target_keras"] == target and conversion["native_file"] == native
    assert conversion["removed_layers"][0]["class_name"] == "RandomFlip" and conversion["strip_max_abs_diff"] == 0.0
    assert conversion["parity"]["max_abs_diff"] <= 1e-5 and conversion["parity"]["argmax_equal"] == 16
    assert any(c["key"] == "input_axes" and c["action"] == "dropped" for c in conversion["changes"])
    with SubmissionZip(built["zip"]) as sub:
        assert native in sub.names and "BEGIN toolkit/preprocess_spec.py" in sub.model_py and "tta_views" in sub.model_py
        manifest = sub.manifest
    assert manifest["versions"]["saved_keras"] == built["manifest"]["versions"]["saved_keras"]
    assert manifest["versions"]["target_keras"] == target and len(manifest["model"]["source_sha256"]) == 64


def test_a_keras3_mobilenet_scores_in_keras_3_4_1_what_it_computes_here(mobilenet, heldout, tmp_path):
    built, simulated = _build_and_simulate(mobilenet, heldout[0], "raw", "an2dl-2024", tmp_path)
    _assert_converted(built, "model.keras", "3.4.1")
    assert built["manifest"]["preprocess_spec"]["text"] == "raw"
    _assert_scores_the_original(simulated, heldout[1], _argmax_here(mobilenet, heldout[0]))


def test_a_mobilenet_for_keras_2_is_refused_naming_the_keras3_op(mobilenet, tmp_path):
    code, out = _cli("build-submission", "--from-keras", mobilenet, "--preprocess", "raw", "--strip-augmentation",
                     "--profile", "an2dl-2023", "-o", tmp_path / "s.zip")
    assert code == 1 and "layer 'MobileNetV3Small/add'" in out["error"]["message"]
    assert "Keras 2 has no layer for it" in out["error"]["message"] and not (tmp_path / "s.zip").exists()


@pytest.mark.slow
@pytest.mark.parametrize("profile,native,target", [("an2dl-2024", "model.keras", "3.4.1"), ("an2dl-2023", "model.h5", "2.15.0")])
def test_a_keras3_efficientnet_scores_what_it_computes_here(notebook, tmp_path, profile, native, target):
    built, simulated = _build_and_simulate(notebook["keras"], notebook["heldout"], "raw", profile, tmp_path)
    _assert_converted(built, native, target)
    _assert_scores_the_original(simulated, notebook["y"], _argmax_here(notebook["keras"], notebook["heldout"]))


@pytest.mark.slow
@pytest.mark.parametrize("profile,native,target", [("an2dl-2024", "model.keras", "3.4.1"), ("an2dl-2023", "model.h5", "2.15.0")])
def test_a_keras2_h5_efficientnet_scores_what_tf_2_15_computes(notebook, tmp_path, profile, native, target):
    built, simulated = _build_and_simulate(notebook["h5"], notebook["heldout"], "scale:1/255", profile, tmp_path)
    _assert_converted(built, native, target)
    assert built["manifest"]["versions"]["saved_keras"] == "2.15.0"
    assert any(c["class_name"] == "DepthwiseConv2D" and c["key"] == "groups" for c in built["conversion"]["load_changes"])
    argmax = np.argmax(np.load(str(notebook["h5"]) + ".probs.npy"), axis=1)  # computed by the Keras that saved it
    _assert_scores_the_original(simulated, notebook["y"], argmax)


def test_augmentation_without_the_flag_is_refused_with_the_hint(mobilenet, tmp_path):
    code, out = _cli("build-submission", "--from-keras", mobilenet, "--preprocess", "raw", "-o", tmp_path / "s.zip")
    assert code == 1 and "random_flip (RandomFlip)" in out["error"]["message"]
    assert "--strip-augmentation" in out["error"]["message"] and not (tmp_path / "s.zip").exists()


def test_an_unregistered_custom_layer_is_refused_by_name(tmp_path):
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((8, 8, 3))
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(Doubler(name="doubler")(inp)))).save(tmp_path / "m.keras")
    code, out = _cli("build-submission", "--from-keras", tmp_path / "m.keras", "--preprocess", "raw", "-o", tmp_path / "s.zip")
    assert code == 1 and "'doubler'" in out["error"]["message"] and "'Doubler'" in out["error"]["message"]
    assert "not registered" in out["error"]["message"]


@pytest.mark.parametrize("head,size,needle", [
    (1, 64, "found outputs of shape (16, 1) (a single sigmoid unit?"),
    (3, 48, "yields images of shape (64, 64, 3), the model takes (48, 48, 3) (add resize:SIZE"),
])
def test_shapes_the_submission_cannot_serve_are_refused_before_converting(heldout, tmp_path, head, size, needle):
    import keras

    inp = keras.Input((size, size, 3))
    act = "sigmoid" if head == 1 else "softmax"
    keras.Model(inp, keras.layers.Dense(head, activation=act)(keras.layers.GlobalAveragePooling2D()(inp))).save(tmp_path / "m.keras")
    code, out = _cli("build-submission", "--from-keras", tmp_path / "m.keras", "--preprocess", "raw", "--data", heldout[0],
                     "-o", tmp_path / "s.zip")
    assert code == 1 and needle in out["error"]["message"], out


def test_a_keras_cv_layer_is_refused_before_loading():
    config = {"class_name": "Functional", "config": {"layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {}, "name": "in"},
        {"module": "keras_cv.src.layers.preprocessing.grid_mask", "class_name": "GridMask", "config": {}, "name": "mask"}]}}
    with pytest.raises(SubmissionError, match=r"layer 'mask' is GridMask from keras_cv\.src"):
        keras_config.refuse_foreign(config, "m.keras", lambda cls: True)


def test_stripping_rewires_consumers_through_chains_and_drops_all_augmentation_blocks():
    import keras

    inp = keras.Input((16, 16, 3))
    aug = keras.Sequential([keras.layers.RandomRotation(0.1), keras.layers.RandomZoom(0.1)], name="augment")
    # named: Keras numbers unnamed layers per process, so another test's RandomContrast would make this one '_1'
    h = keras.layers.RandomContrast(0.2, name="random_contrast")(keras.layers.RandomFlip(name="random_flip")(aug(inp)))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))))
    stripped, removed = keras_config.strip_augmentation(json.loads(model.to_json()))
    assert [c.path for c in removed] == ["augment", "random_flip", "random_contrast"]
    rebuilt = keras.models.model_from_json(json.dumps(stripped))
    assert [type(layer).__name__ for layer in rebuilt.layers] == ["InputLayer", "Conv2D", "GlobalAveragePooling2D", "Dense"]


def test_keras3_ops_have_no_keras2_form():
    import keras

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp + 3.0))
    with pytest.raises(SubmissionError, match="Keras 3 operation keras.src.ops.numpy.Add"):
        keras_config.to_keras2(json.loads(model.to_json()))


def test_a_savedmodel_folder_is_refused_with_the_way_out(tmp_path):
    code, out = _cli("build-submission", "--from-keras", tmp_path, "--preprocess", "raw", "-o", tmp_path / "s.zip")
    assert code == 1 and "model.save('model.keras')" in out["error"]["message"]


def test_source_and_from_keras_are_exclusive(tmp_path):
    result = CliRunner().invoke(main, ["build-submission", "--from-keras", str(tmp_path), "-o", str(tmp_path / "s.zip")])
    assert result.exit_code == 2 and "--preprocess" in result.output
