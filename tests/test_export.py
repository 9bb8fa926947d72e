"""`cbtool export`: every format written, hashed, and checked against the run's probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from export_data import CLASSES, make_run_dir
from toolkit.cli import main
from toolkit.errors import ExportError, UsageError
from toolkit.export import export_run, parse_formats
from toolkit.fsutil import sha256_file


MANIFEST_KEYS = ("cbtool_export", "created", "run_dir", "formats", "fp16", "model", "versions", "preprocessing", "arch",
                 "parity", "files", "notes", "partial", "int8")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run") / "run")


def test_parse_formats():
    assert parse_formats("onnx, portable") == ["portable", "onnx"]
    with pytest.raises(UsageError, match="unknown tflite; expected a comma list of portable, keras, onnx"):
        parse_formats("portable,tflite")
    with pytest.raises(UsageError, match=r"unknown onnxx \(did you mean onnx\?\)"):
        parse_formats("onnxx")


def test_convnext_tiny_exports_in_all_formats(tmp_path):
    run = make_run_dir(tmp_path / "run", variant="convnext_tiny", n_probe=4)
    manifest = export_run(run, tmp_path / "export", ["portable", "keras", "onnx"]).to_dict()
    out = tmp_path / "export"
    expected = {"manifest.json", "model_spec.json", "classes.json", "preprocessing.json", "probe.npz",
                "model.weights.h5", "weights.npz", "model.keras", "model.onnx"}
    assert {p.name for p in out.iterdir()} == expected
    assert manifest["model"]["parameters"] > 27_000_000
    onnx = manifest["parity"]["onnx"]
    assert onnx["argmax_agreement"] == 1.0 and onnx["max_abs_diff"] <= 1e-4 and onnx["opset"] == 15
    assert manifest["parity"]["portable"]["weights_npz"]["max_abs_diff"] <= 1e-5
    assert manifest["parity"]["keras"]["max_abs_diff"] <= 1e-5
    for name, info in manifest["files"].items():
        assert info["sha256"] == sha256_file(out / name) and info["bytes"] == (out / name).stat().st_size
    assert manifest["versions"]["keras"].startswith("3.") and manifest["versions"]["tf2onnx"]
    assert manifest["preprocessing"]["matches_run"] is True and manifest["notes"] == []
    from conftest import ROOT

    assert manifest["arch"]["sha256"] == sha256_file(ROOT / "toolkit" / "arch.py")
    assert manifest["arch"]["source"] == "toolkit/arch.py" and manifest["model"]["input_layer"] == "cbtool_input_norm"
    # a dynamic batch: onnxruntime runs 1 and 3 images through the same file
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_outputs()[0].name == "probs"
    for n in (1, 3):
        x = np.random.default_rng(n).integers(0, 256, (n, 96, 96, 3)).astype(np.float32)
        assert session.run(None, {"image": x})[0].shape == (n, len(CLASSES))


def test_fp16_halves_weights_and_records_agreement(run_dir, tmp_path):
    full = export_run(run_dir, tmp_path / "fp32", ["portable"])
    half = export_run(run_dir, tmp_path / "fp16", ["portable", "keras"], fp16=True)
    assert "model.keras and model.onnx stay float32" in half.notes[0]
    with np.load(tmp_path / "fp16" / "weights.npz") as data:
        assert data["stage_0_block_0_pw1/0"].dtype == np.float16
    assert half.files["weights.npz"]["bytes"] < 0.6 * full.files["weights.npz"]["bytes"]
    assert half.files["model.weights.h5"]["bytes"] < full.files["model.weights.h5"]["bytes"]
    parity = half.parity["portable"]
    assert parity["dtype"] == "float16"
    for key in ("weights_h5", "weights_npz"):
        assert 0 < parity[key]["max_abs_diff"] < 1e-2 and parity[key]["argmax_agreement"] >= 0.75


def test_export_refuses_weights_that_do_not_reproduce_the_probe(run_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    with np.load(broken / "probe.npz") as data:
        arrays = dict(data)
    arrays["probs"] = np.roll(arrays["probs"], 1, axis=1)
    np.savez(broken / "probe.npz", **arrays)
    with pytest.raises(ExportError, match="does not reproduce probe.npz"):
        export_run(broken, tmp_path / "out", ["portable"])
    assert not (tmp_path / "out").exists()


def test_missing_run_files_and_foreign_target(run_dir, tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_spec.json").write_text("{}")
    with pytest.raises(ExportError, match="missing classes.json.*best.weights.h5"):
        export_run(tmp_path / "half", tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not an empty dir or a previous export"):
        export_run(run_dir, tmp_path / "busy")
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_cli_json_and_re_export_replaces(run_dir, tmp_path):
    target = tmp_path / "exp"
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run_dir), "-o", str(target), "--format", "portable,onnx", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["formats"] == ["portable", "onnx"] and (target / "model.onnx").is_file()
    on_disk = json.loads((target / "manifest.json").read_text())
    assert on_disk["files"] == manifest["files"]
    # --json is the manifest plus the result schema version; the file itself keeps the manifest's keys
    assert list(manifest) == [*MANIFEST_KEYS, "schema_version"] and list(on_disk) == list(MANIFEST_KEYS)
    result = runner.invoke(main, ["export", str(run_dir), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert not (target / "model.onnx").exists() and "weights_npz" in result.output
    result = runner.invoke(main, ["export", str(run_dir), "-o", str(target), "--format", "tflite", "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["error"]["kind"] == "usage"  # a bad option value
