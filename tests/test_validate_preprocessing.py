"""validate-preprocessing: the correct submission is byte-identical in the pinned runtimes; each planted bug in
predict() (edited into a built model.py) is caught and diagnosed. The run uses input_size 64 with 96x96 probes, so
the resize path is live."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from submission_data import any_class_count, patch_model_py, shared_export
from toolkit.cli import main
from toolkit.errors import RuntimeProfileError
from toolkit.runtime.profiles import get_profile, local_profile
from toolkit.submission.build import BuildOptions, build_submission
from toolkit.preprocess_spec import parse_spec
from toolkit.submission.render import embedded_block
from toolkit.submission.validate import (compare_input, spec_expected, spec_source_hashes, training_expected,
                                        validate_preprocessing)

BATCH_LINE = "batch = preprocess(x[start:start + BATCH_SIZE], INPUT_SIZE, RESIZE)"
PLANTED = {
    # bug: (old text, new text, a fragment the diagnosis must contain)
    "div255": (BATCH_LINE, BATCH_LINE + " / 255.0", "extra /255"),
    "div127": (BATCH_LINE, BATCH_LINE + " / 127.5 - 1.0", "extra /127.5 - 1"),
    "bgr": (BATCH_LINE, BATCH_LINE + "[..., ::-1]", "channels reversed"),
    "resize_method": ("RESIZE = 'bilinear'", "RESIZE = 'nearest'", "resize method: the submission resized with 'nearest'"),
    "resize_size": ("INPUT_SIZE = 64", "INPUT_SIZE = 72", "resize size: training fed 64x64, the submission fed 72x72"),
    "dtype": ("x = _as_numpy(X)\n", "x = _as_numpy(X).astype(np.uint8)\n", "dtype: values truncated to integers"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run, export = shared_export()
    base = tmp_path_factory.mktemp("validate")
    build_submission(export, base / "local.zip", local_profile(), BuildOptions(tta="flip", batch_size=4))
    return run, export, base


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_diagnosed(built, bug):
    run, export, base = built
    old, new, fragment = PLANTED[bug]
    zip_path = patch_model_py(base / "local.zip", base / f"{bug}.zip", old, new)
    report = validate_preprocessing(zip_path, run, local_profile())
    assert not report.ok
    assert any(fragment in d for d in report.diagnoses), report.diagnoses
    if bug == "resize_size":  # Keras' input check rejects 72x72 before the first layer: diagnosed from the error
        assert report.failure["kind"] == "predict_error"
        return
    differing = [i for i in report.inputs if not i["identical"]]
    first = differing[0]["first_difference"]
    assert len(first["index"]) == 4 and first["expected"] != first["found"]


def test_edited_embedded_source_fails_the_hash_comparison(built):
    run, export, base = built
    zip_path = patch_model_py(base / "local.zip", base / "edited.zip", 'RESIZE_METHODS = ("bilinear", "nearest")',
                              'RESIZE_METHODS = ("bilinear", "nearest", "area")')
    report = validate_preprocessing(zip_path, run, local_profile())
    assert not report.ok and report.source["match"] is False
    assert all(i["identical"] for i in report.inputs)  # same bytes, but not the training source
    assert any("block was edited" in d for d in report.diagnoses)


def test_hand_written_model_predict_path_is_captured(built, tmp_path):
    """A user's model.py calling keras' model.predict (graph mode) on X / 255: still captured and diagnosed."""
    run, export, base = built
    source = (
        "import os\nimport numpy as np\nimport keras\n\n"
        "class Model:\n"
        "    def __init__(self):\n"
        "        here = os.path.dirname(os.path.abspath(__file__))\n"
        "        self.model = keras.models.load_model(os.path.join(here, 'model.keras'))\n\n"
        "    def predict(self, X):\n"
        "        X = np.asarray(X, dtype=np.float32)\n"
        "        X = keras.ops.image.resize(X, (64, 64)).numpy()\n"
        "        return np.argmax(self.model.predict(X / 255.0, verbose=0), axis=1)\n"
    )
    zip_path = tmp_path / "hand.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("model.py", source)
        zf.write(export / "model.keras", "model.keras")
    report = validate_preprocessing(zip_path, run, local_profile())
    assert not report.ok and report.capture_target.startswith("keras layer 'cbtool_input_norm'")
    assert report.source["match"] is None and "no embedded" in report.source["message"]
    assert report.diagnoses and all(not i["identical"] for i in report.inputs[:2])


@pytest.mark.parametrize("name", ["an2dl-2024", "an2dl-2023"])
def test_built_submission_is_byte_identical_in_the_pinned_runtime(built, tmp_path, name):
    run, export, base = built
    profile = get_profile(name)
    try:
        from toolkit.runtime.sandbox import runtime_python

        runtime_python(profile)
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"runtime {name} unavailable: {exc}")
    zip_path = tmp_path / f"{name}.zip"
    assert build_submission(export, zip_path, any_class_count(profile), BuildOptions(tta="d4")).check.ok
    result = CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), "--run", str(run), "--profile", name, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["source"]["match"] is True and report["tta_views"] == 8 and report["schema_version"] == 1
    fed = {i["input"] for i in report["inputs"]}
    if name == "an2dl-2024":
        assert fed == {"probe_uint8", "probe_float32", "zeros_uint8", "full_uint8", "fractional_float32"}
    else:  # the 2023 contract only ever hands over float32 tensors: no uint8 probe
        assert fed == {"probe_float32", "zeros_float32", "full_float32", "fractional_float32"}


def test_cli_mismatch_exits_3(built):
    run, export, base = built
    zip_path = patch_model_py(base / "local.zip", base / "cli.zip", *PLANTED["div255"][:2])
    result = CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), "--run", str(run), "--profile", "local"])
    assert result.exit_code == 3
    assert "MISMATCH" in result.output and "first difference at" in result.output and "extra /255" in result.output


def test_capture_inside_a_tf_function(built):
    """A forward pass compiled with tf.function hands the first layer graph tensors: still captured, still identical."""
    run, export, base = built
    step = patch_model_py(base / "local.zip", base / "fn1.zip", "        load_weights_npz(self.net, os.path.join(base, WEIGHTS_FILE))\n",
                          "        load_weights_npz(self.net, os.path.join(base, WEIGHTS_FILE))\n"
                          "        self._fn = tf.function(lambda v: self.net(v, training=False))\n")
    zip_path = patch_model_py(step, base / "fn2.zip", "y = self.net(x, training=False)", "y = self._fn(x)")
    report = validate_preprocessing(zip_path, run, local_profile())
    assert report.ok, report.diagnoses
    assert [len(i["found_shape"]) for i in report.inputs] == [4] * 5


# --- declared preprocessing (--preprocess SPEC) on hand-written zips -----------------------------------------------

SAVE_SCRIPT = """
import sys
import tensorflow as tf
keras = tf.keras
tf.random.set_seed(0)
inputs = keras.Input((96, 96, 3))
x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
keras.Model(inputs, keras.layers.Dense(8, activation="softmax")(x)).save(sys.argv[1])
"""
HAND_WRITTEN = {
    # profile: (weights file, model.py): a student's own predict() dividing by 255 before its network
    "an2dl-2024": ("model.keras", (
        "import os\nimport numpy as np\nimport keras\n\n\n"
        "class Model:\n"
        "    def __init__(self):\n"
        "        here = os.path.dirname(os.path.abspath(__file__))\n"
        "        self.net = keras.models.load_model(os.path.join(here, 'model.keras'))\n\n"
        "    def predict(self, X):\n"
        "        X = np.asarray(X, dtype=np.float32) / 255.0\n"
        "        return np.argmax(self.net.predict(X, verbose=0), axis=1)\n")),
    "an2dl-2023": ("model.h5", (
        "import os\nimport tensorflow as tf\n\n\n"
        "class model:\n"
        "    def __init__(self, path):\n"
        "        self.net = tf.keras.models.load_model(os.path.join(path, 'model.h5'))\n\n"
        "    def predict(self, X):\n"
        "        X = tf.cast(X, tf.float32) / 255.0\n"
        "        return tf.argmax(self.net.predict(X, verbose=0), axis=-1)\n")),
}


def _pinned(name: str):
    from toolkit.runtime.sandbox import runtime_python

    profile = get_profile(name)
    try:
        return profile, runtime_python(profile)
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"runtime {name} unavailable: {exc}")


def _hand_written_zip(name: str, folder: Path, extra: str = "", manifest: dict | None = None) -> Path:
    """model.py + weights saved by the profile's own Keras (a script run in its runtime) + `metadata` for 2023."""
    profile, python = _pinned(name)
    weights, source = HAND_WRITTEN[name]
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / weights).exists():
        subprocess.run([python, "-c", SAVE_SCRIPT, str(folder / weights)], check=True, capture_output=True, timeout=300)
    zip_path = folder / f"{name}{'-' + str(len(extra)) if extra else ''}.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("model.py", source + extra)
        zf.write(folder / weights, weights)
        if profile.contract.metadata:
            zf.writestr("metadata", "")
        if manifest is not None:
            zf.writestr("manifest.json", json.dumps(manifest))
    return zip_path


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "probe.npz"
    rng = np.random.default_rng(1)
    np.savez(path, images=rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8), labels=rng.integers(0, 8, (4, 1)))
    return path


def _validate_cli(zip_path: Path, spec: str, data: Path, profile: str, *flags: str):
    return CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), "--preprocess", spec, "--data", str(data),
                                     "--profile", profile, "--images", "3", *flags])


def test_hand_written_zip_passes_its_declared_scale_and_fails_raw(tmp_path_factory, probe_data):
    zip_path = _hand_written_zip("an2dl-2024", tmp_path_factory.mktemp("hand2024"))
    result = _validate_cli(zip_path, "scale:1/255", probe_data, "an2dl-2024", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 0, report
    assert report["ok"] and report["preprocess_spec"]["text"] == "scale:1/255" and report["run"] is None
    assert {i["input"] for i in report["inputs"]} == {"probe_uint8", "probe_float32", "zeros_uint8", "full_uint8",
                                                      "fractional_float32"}
    assert all(i["identical"] for i in report["inputs"]) and report["input_size"] == 96
    assert report["source"]["match"] is None and "records no preprocess_spec" in report["source"]["message"]

    result = _validate_cli(zip_path, "raw", probe_data, "an2dl-2024")
    assert result.exit_code == 3, result.output
    assert "MISMATCH" in result.output and "vs --preprocess raw" in result.output
    assert "first difference at" in result.output and "declared 255.0, submission 1.0" in result.output
    assert "diagnosis: an extra /255 (the declared preprocessing is 'raw')" in result.output


def test_2023_contract_probes_float32_only(tmp_path_factory, probe_data):
    zip_path = _hand_written_zip("an2dl-2023", tmp_path_factory.mktemp("hand2023"))
    result = _validate_cli(zip_path, "scale:1/255", probe_data, "an2dl-2023", "--json")
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["ok"], report
    assert {i["input"] for i in report["inputs"]} == {"probe_float32", "zeros_float32", "full_float32", "fractional_float32"}


IMAGES = np.random.default_rng(2).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
SPEC_BUGS = {
    # declared spec, what the submission fed instead (from uint8 images), the diagnosis fragment
    "missing_scale": ("scale:1/255", lambda x: x.astype(np.float32), "a missing /255 (the declared preprocessing divides"),
    "missing_offset": ("scale:1/127.5,offset:-1", lambda x: x.astype(np.float32), "a missing /127.5 - 1"),
    "bgr": ("bgr+scale:1/255", lambda x: x.astype(np.float32) / 255.0, "channels reversed (RGB <-> BGR)"),
    "size": ("resize:64:bilinear", lambda x: x.astype(np.float32), "resize size: the declared preprocessing fed 64x64, the submission fed 96x96"),
    "dtype": ("scale:1/255", lambda x: (x / 255.0).astype(np.float16), "dtype: the network received float16"),
    "other": ("raw", lambda x: x.astype(np.float32) ** 0.5, "compare predict() with --preprocess raw"),
}


@pytest.mark.parametrize("bug", sorted(SPEC_BUGS))
def test_declared_spec_mismatches_are_diagnosed(bug):
    text, fed, fragment = SPEC_BUGS[bug]
    spec = parse_spec(text)
    item = compare_input("probe_uint8", IMAGES, [fed(IMAGES)], spec.apply(IMAGES), spec_expected(spec))
    assert not item["match"] and any(fragment in d for d in item["diagnosis"]), item["diagnosis"]


def test_declared_spec_accepts_float32_rounding_that_training_does_not():
    """`x * (1/255)` is 1 ulp off `x / 255` on some pixels: equal for a declared spec, not byte-identical for --run."""
    spec = parse_spec("scale:1/255")
    fed = IMAGES.astype(np.float32) * np.float32(1 / 255)
    item = compare_input("probe_uint8", IMAGES, [fed], spec.apply(IMAGES), spec_expected(spec))
    assert item["match"] and not item["identical"] and 0 < item["max_abs_diff"] < 1e-7
    training = training_expected(96, "bilinear")
    scaled = IMAGES.astype(np.float32) * np.float32(1 + 2 ** -23)  # 1 ulp up
    item = compare_input("probe_uint8", IMAGES, [scaled], training.fn(IMAGES), training)
    assert not item["match"] and not item["identical"]


def test_declared_resize_accepts_tf_image_resize_arithmetic_but_not_another_method():
    import tensorflow as tf

    spec = parse_spec("resize:224:bilinear")
    x = IMAGES.astype(np.float32)
    fed = tf.image.resize(x, (224, 224), "bilinear").numpy()
    item = compare_input("probe_float32", x, [fed], spec.apply(x), spec_expected(spec))
    assert item["match"] and not item["identical"] and item["max_abs_diff"] > 1e-4  # 0.0017 measured (TF 2.21)
    fed = tf.image.resize(x, (224, 224), "nearest").numpy()
    item = compare_input("probe_float32", x, [fed], spec.apply(x), spec_expected(spec))
    assert not item["match"] and any("resize method: the submission resized with 'nearest'" in d for d in item["diagnosis"])


def test_manifest_spec_block_hash_is_compared(tmp_path_factory, probe_data):
    """A zip that embeds the declared block (as --from-keras writes it) and calls it: tensor and source both match."""
    spec = parse_spec("scale:1/127.5,offset:-1")
    calls = ("\n\n" + embedded_block(spec.name, spec.source) + "\n\n\n"
             "Model.predict = lambda self, X: np.argmax(self.net.predict(preprocess(X), verbose=0), axis=1)\n")
    folder = tmp_path_factory.mktemp("declared")
    zip_path = _hand_written_zip("an2dl-2024", folder, calls, {"preprocess_spec": spec.to_dict()})
    report = validate_preprocessing(zip_path, None, get_profile("an2dl-2024"), spec=spec, data=probe_data, n_images=2)
    assert report.ok, report.diagnoses
    assert report.source["match"] is True and report.source["spec_sha256"] == spec.sha256()
    assert all(i["identical"] for i in report.inputs)  # the embedded block is exactly what apply() ran


def test_spec_source_hashes_catch_an_edited_block_or_another_spec():
    spec = parse_spec("scale:1/255")
    model_py = "import numpy as np\n" + embedded_block(spec.name, spec.source) + "\n"
    manifest = {"preprocess_spec": spec.to_dict()}
    assert spec_source_hashes(model_py, manifest, spec)["match"] is True
    edited = spec_source_hashes(model_py.replace("np.float32(255.0)", "np.float32(256.0)"), manifest, spec)
    assert edited["match"] is False and "the block was edited" in edited["message"]
    other = spec_source_hashes(model_py, manifest, parse_spec("raw"))
    assert other["match"] is False and "'scale:1/255'" in other["message"]
    missing = spec_source_hashes("import numpy as np\n", manifest, spec)
    assert missing["match"] is False and "embeds none" in missing["message"]


@pytest.mark.slow
def test_cbtool_built_zip_against_a_declared_resize(built, probe_data):
    """A cbtool zip (input 64, bilinear) meets `resize:64:bilinear` and is told the method when declared nearest."""
    run, export, base = built
    report = validate_preprocessing(base / "local.zip", None, local_profile(), spec=parse_spec("resize:64:bilinear"),
                                    data=probe_data, n_images=2)
    assert report.ok and report.source["match"] is None and report.resize == "bilinear"
    report = validate_preprocessing(base / "local.zip", None, local_profile(), spec=parse_spec("resize:64:nearest"),
                                    data=probe_data, n_images=2)
    assert not report.ok
    assert "resize method: the submission resized with 'bilinear', the declared preprocessing used 'nearest'" in report.diagnoses


@pytest.mark.parametrize("args, fragment", [
    ([], "exactly one of --run"),
    (["--run", ".", "--preprocess", "raw"], "exactly one of --run"),
    (["--preprocess", "raw"], "--preprocess needs --data"),
])
def test_run_or_preprocess_is_a_usage_error(tmp_path, args, fragment):
    zip_path = tmp_path / "s.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    result = CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), *args, "--json"])
    assert result.exit_code == 2 and fragment in json.loads(result.output)["error"]["message"]


def test_bad_spec_is_one_json_error(tmp_path, probe_data):
    zip_path = tmp_path / "s.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    result = CliRunner().invoke(main, ["validate-preprocessing", str(zip_path), "--preprocess", "scale:x",
                                       "--data", str(probe_data), "--json"])
    error = json.loads(result.output)["error"]
    assert result.exit_code == 2 and error["kind"] == "usage" and "scale:x" in error["message"]
