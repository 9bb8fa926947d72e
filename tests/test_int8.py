"""int8 weights: the format (toolkit/int8.py), `export --int8`, `build-submission --int8`, and the zip in the graders'
pinned runtimes (slow)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from export_data import make_run_dir
from toolkit.int8 import SCALE_SUFFIX, dequantize_arrays, quantize_arrays


def _kernels():
    rng = np.random.default_rng(0)
    gains = np.array([1e-3, 0.1, 1.0, 30.0, 0.0, 2.0], np.float32)  # channels of very different range; one all zero
    return {
        "dense/0": rng.standard_normal((5, 6)).astype(np.float32) * gains,
        "dense/1": rng.standard_normal(6).astype(np.float32),
        "conv/0": rng.standard_normal((3, 3, 4, 6)).astype(np.float32) * gains,
        "dw/0": rng.standard_normal((7, 7, 6, 1)).astype(np.float32) * gains[:, None],
        "ln/0": np.ones(6, np.float32),
        "__cbtool_weights__": np.asarray(1),
    }


def test_round_trip_error_is_bounded_per_channel():
    arrays = _kernels()
    quantized = quantize_arrays(arrays)
    assert {k for k in quantized if k.endswith(SCALE_SUFFIX)} == {k + SCALE_SUFFIX for k in ("dense/0", "conv/0", "dw/0")}
    assert quantized["dense/1"].dtype == np.float32 and quantized["ln/0"].dtype == np.float32  # biases and norms stay
    back = dequantize_arrays(quantized)
    assert set(back) == set(arrays)
    for key in ("dense/0", "conv/0", "dw/0"):
        q, scale = quantized[key], quantized[key + SCALE_SUFFIX]
        assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127 and scale.ndim == q.ndim
        assert back[key].dtype == np.float32
        err = np.abs(back[key] - arrays[key])
        assert (err <= np.broadcast_to(scale, err.shape) / 2 + 1e-7 * np.abs(arrays[key])).all(), key
    for key in ("dense/1", "ln/0", "__cbtool_weights__"):
        np.testing.assert_array_equal(back[key], arrays[key])
    # the all-zero channel (index 4) comes back exactly zero, with a finite scale
    assert not back["conv/0"][..., 4].any() and np.isfinite(quantized["conv/0" + SCALE_SUFFIX]).all()


def test_depthwise_kernels_get_one_scale_per_channel():
    scale = quantize_arrays(_kernels())["dw/0" + SCALE_SUFFIX]
    assert scale.shape == (1, 1, 6, 1)
    assert len(np.unique(scale[scale != 1.0])) == 5  # five non-zero channels, five different ranges
    # a single layer-wide scale would round the 1e-3 channel to zero; per channel it keeps ~1% precision
    arrays = _kernels()
    back = dequantize_arrays(quantize_arrays(arrays))["dw/0"][..., 0, 0]
    small = arrays["dw/0"][..., 0, 0]
    assert np.abs(back - small).max() <= 0.01 * np.abs(small).max()


def test_float_files_pass_through_unchanged():
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in _kernels().items()}
    assert dequantize_arrays(half) is half


# ---- a real convnext_test run exported and built with --int8 ----

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from toolkit.export import export_run

    base = tmp_path_factory.mktemp("int8")
    run = make_run_dir(base / "run", n_probe=16)
    export_run(run, base / "f32", ["portable", "onnx"])
    return run, base


def _cli(*args):
    from toolkit.cli import main

    result = CliRunner().invoke(main, [*map(str, args), "--json"])
    return result.exit_code, json.loads(result.output)


def test_export_int8_records_agreement_and_bytes(exports, tmp_path):
    run, _ = exports
    code, out = _cli("export", run, "-o", tmp_path / "e", "--int8")
    assert code == 0, out
    entry = out["parity"]["portable"]["weights_npz"]
    assert out["int8"] is True and out["parity"]["portable"]["dtype"] == "int8"
    assert entry["n"] == 16 and entry["argmax_agreement"] >= entry["min_agreement"] == 0.95
    assert 0 < entry["max_abs_diff"] < 0.05
    assert entry["bytes_int8"] < 0.3 * entry["bytes_float32"]
    with np.load(tmp_path / "e" / "weights.npz") as data:
        assert data["stem_conv/0"].dtype == np.int8 and data["stem_conv/1"].dtype == np.float32
    assert out["parity"]["portable"]["weights_h5"]["max_abs_diff"] <= 1e-5  # the .weights.h5 stays float32, exact
    code, out = _cli("export", run, "-o", tmp_path / "x", "--int8", "--fp16")
    assert code == 2 and "exclusive" in out["error"]["message"]


def test_export_int8_below_the_floor_fails_and_suggests_fp16(exports, tmp_path, monkeypatch):
    import toolkit.export
    from toolkit.errors import ExportError

    monkeypatch.setattr(toolkit.export, "INT8_MIN_AGREEMENT", 1.01)  # no int8 file can reach it
    with pytest.raises(ExportError, match="below the int8 floor 1.01 .*use --fp16"):
        toolkit.export.export_run(exports[0], tmp_path / "e", ["portable"], int8=True)
    assert not (tmp_path / "e").exists()  # nothing half-written


def test_build_submission_int8_from_run_float32_export_and_int8_export(exports, tmp_path):
    run, base = exports
    code, plain = _cli("build-submission", base / "f32", "-o", tmp_path / "f32.zip")
    assert code == 0, plain
    builds = {}
    for name, source in (("run", run), ("f32", base / "f32")):
        code, out = _cli("build-submission", source, "-o", tmp_path / f"{name}.int8.zip", "--int8")
        assert code == 0 and out["check"]["ok"], out
        builds[name] = out
    _cli("export", run, "-o", base / "i8", "--int8")
    code, builds["i8"] = _cli("build-submission", base / "i8", "-o", tmp_path / "i8.zip")  # int8 export: int8 zip
    assert code == 0, builds["i8"]
    for name, out in builds.items():
        manifest = out["manifest"]
        assert manifest["int8"] is True and manifest["quantization"]["argmax_agreement"] >= 0.95, name
        assert manifest["quantization"]["n"] == 16
        assert out["bytes"] < 0.5 * plain["bytes"], (name, out["bytes"], plain["bytes"])
        assert "int8.py" in manifest["embedded"]
    assert plain["manifest"]["int8"] is False and "quantization" not in plain["manifest"]
    with zipfile.ZipFile(tmp_path / "f32.int8.zip") as zf:
        model_py = zf.read("model.py").decode()
    assert "decode=dequantize_arrays" in model_py and "# ---- BEGIN toolkit/int8.py" in model_py
    from toolkit.gradcam import load_network  # simulate's Grad-CAM and --tta auto rebuild the zip's network in-process

    x = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype(np.float32)
    same = [np.asarray(load_network(tmp_path / f"{name}.zip").model.predict(x, verbose=0)) for name in ("f32.int8", "i8")]
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # quantized at build = quantized at export, bytes alike
    code, out = _cli("build-submission", base / "f32", "-o", tmp_path / "bad.zip", "--int8", "--fp16")
    assert code == 2 and not (tmp_path / "bad.zip").exists()
    code, out = _cli("build-submission", base / "f32", "-o", tmp_path / "bad.zip", "--int8", "--format", "keras")
    assert code == 2 and "no int8 form" in out["error"]["message"]


def test_onnx_int8_is_quantized_by_onnxruntime_and_keeps_parity(exports, tmp_path):
    import onnx

    run, base = exports
    code, out = _cli("export", run, "-o", tmp_path / "e", "--format", "onnx", "--int8")
    assert code == 0, out
    entry = out["parity"]["onnx"]
    assert entry["dtype"] == "int8" and entry["argmax_agreement"] >= 0.95 and entry["max_abs_diff"] < 0.05
    assert entry["float32"]["max_abs_diff"] <= 1e-4 and entry["bytes_int8"] < entry["bytes_float32"]
    ops = {node.op_type for node in onnx.load(str(tmp_path / "e" / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops, ops
    code, out = _cli("build-submission", base / "f32", "-o", tmp_path / "o.zip", "--format", "onnx", "--int8",
                     "--profile", "local")  # onnxruntime: only where the runtime has it
    assert code == 0 and out["manifest"]["quantization"]["method"].startswith("onnxruntime.quantization"), out


# ---- the int8 zip in the graders' pinned runtimes (slow: two venvs, a TensorFlow child each) ----

@pytest.mark.slow
@pytest.mark.parametrize("profile_name", ["an2dl-2024", "an2dl-2023"])
def test_int8_zip_predicts_in_the_pinned_runtime_what_the_dequantized_network_does(exports, tmp_path, profile_name):
    from submission_data import any_class_count, probe
    from submission_data import pinned_runtime  # the pinned profile, its venv made (skips without a registry)
    from toolkit.families import build_model, family_of
    from toolkit.preprocessing import preprocess
    from toolkit.runtime.sandbox import run_submission
    from toolkit.submission.build import BuildOptions, build_submission

    _, base = exports
    profile = any_class_count(pinned_runtime(profile_name))  # the 8-class fixture under 2023's 2-class contract too
    assert build_submission(base / "f32", tmp_path / "s.zip", profile, BuildOptions(int8=True)).check.ok
    images = probe(base / "f32")["images"]
    spec = json.loads((base / "f32" / "model_spec.json").read_text())
    model = build_model(spec)  # toolkit's network with the zip's own int8 weights, dequantized in this process
    family_of(spec["variant"]).arch_module().load_weights_npz(model, _int8_npz(tmp_path / "s.zip", tmp_path),
                                                             decode=dequantize_arrays)
    expected = np.asarray(model.predict(preprocess(images, int(spec["input_size"])), verbose=0)).argmax(1)
    outcome = run_submission(tmp_path / "s.zip", profile, {"x": images.astype(profile.contract.dtypes[0])})
    assert outcome.ok, outcome.failure
    np.testing.assert_array_equal(np.asarray(outcome.outputs["x"]).reshape(-1), expected)


def _int8_npz(zip_path, tmp_path) -> str:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extract("weights.npz", tmp_path / "unzipped")
    return str(tmp_path / "unzipped" / "weights.npz")


def test_export_int8_with_only_the_keras_format_is_a_usage_error(tmp_path):
    from toolkit.cli import main

    make_run_dir(tmp_path / "run")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "e"), "--format", "keras",
                                       "--int8"])
    assert result.exit_code == 2 and "model.keras has no int8 form" in result.output
    assert not (tmp_path / "e").exists()
