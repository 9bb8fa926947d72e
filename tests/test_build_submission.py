"""build-submission: deterministic zips, and the rendered model.py predicting like training in the pinned runtimes.

The runtime tests run the built zip through the sandbox (the grader's way: a child of the pinned venv) and compare
its predictions with the probe's softmax computed in the training process. The an2dl-* venvs are created with pip
on first use and cached; those tests skip only when no registry can be reached.
"""

from __future__ import annotations

import ast
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from export_data import CLASSES
from submission_data import any_class_count, pinned_runtime, probe, shared_export
from toolkit.cli import main
from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import get_profile, local_profile
from toolkit.runtime.sandbox import run_submission
from toolkit.submission.build import BuildOptions, build_submission
from toolkit.submission.render import extract_blocks


def test_build_twice_gives_identical_bytes_and_a_clean_root(tmp_path):
    run, export = shared_export()
    first = build_submission(export, tmp_path / "a.zip", get_profile("an2dl-2024"))
    second = build_submission(export, tmp_path / "b.zip", get_profile("an2dl-2024"))
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert first.sha256 == second.sha256 and first.check.ok, first.check
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["model.py", "weights.npz", "manifest.json"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in zf.infolist()} == {0o100644}
        manifest = json.loads(zf.read("manifest.json"))
        model_py = zf.read("model.py").decode()
    assert manifest["profile"]["name"] == "an2dl-2024" and manifest["classes"] == CLASSES
    assert manifest["preprocessing"]["sha256"] == manifest["preprocessing"]["run_sha256"]
    assert manifest["files"]["weights.npz"]["bytes"] > 0 and manifest["tta"] == "none"
    blocks = extract_blocks(model_py)
    assert set(blocks) == {"preprocessing.py", "tta.py", "arch.py"}
    assert all(b["sha256_marker"] == b["sha256_body"] for b in blocks.values())
    imports = {n.names[0].name.split(".")[0] for n in ast.parse(model_py).body if isinstance(n, ast.Import)}
    imports |= {n.module.split(".")[0] for n in ast.parse(model_py).body if isinstance(n, ast.ImportFrom)}
    assert imports <= {"json", "os", "numpy", "tensorflow"}
    assert ast.get_docstring(ast.parse(model_py)).count("predict(X)") == 1


def test_build_from_a_run_dir_exports_first_and_matches(tmp_path):
    run, export = shared_export()
    from_run = build_submission(run, tmp_path / "run.zip", get_profile("an2dl-2024"))
    from_export = build_submission(export, tmp_path / "export.zip", get_profile("an2dl-2024"))
    assert from_run.sha256 == from_export.sha256


def test_build_refuses_a_directory_that_is_neither(tmp_path):
    with pytest.raises(SubmissionError, match="neither an export dir"):
        build_submission(tmp_path, tmp_path / "x.zip", get_profile("an2dl-2024"))


def test_an2dl_2024_runtime_predicts_like_training(tmp_path):
    profile = pinned_runtime("an2dl-2024")
    run, export = shared_export()
    build_submission(export, tmp_path / "s.zip", profile)
    p = probe(export)
    outcome = run_submission(tmp_path / "s.zip", profile, {"u8": p["images"], "f32": p["images"].astype(np.float32)})
    assert outcome.status == "ok", outcome.failure
    for name in ("u8", "f32"):
        assert outcome.outputs[name].dtype == np.int64 and outcome.outputs[name].shape == (len(p["images"]),)
        np.testing.assert_array_equal(outcome.outputs[name], p["probs"].argmax(1))


def test_an2dl_2023_runtime_keras2_loads_the_neutral_weights(tmp_path):
    profile = any_class_count(pinned_runtime("an2dl-2023"))  # the shared export has 8 classes; this is about Keras 2
    run, export = shared_export()
    result = build_submission(export, tmp_path / "s23.zip", profile)
    assert result.check.ok and "metadata" in result.manifest["files"]
    p = probe(export)
    outcome = run_submission(tmp_path / "s23.zip", profile, {"tensor": p["images"].astype(np.float32)})
    assert outcome.status == "ok", outcome.failure
    np.testing.assert_array_equal(outcome.outputs["tensor"], p["probs"].argmax(1))


def test_tta_onnx_and_fp16_in_the_local_runtime(tmp_path):
    """flip/d4 average the softmax of numpy views; onnx runs through onnxruntime, keras loads model.keras; fp16 halves the weights."""
    import tensorflow as tf  # noqa: F401 - the in-process reference

    from toolkit.arch import build_model, load_weights_npz
    from toolkit.preprocessing import preprocess

    run, export = shared_export()
    p = probe(export)
    spec = json.loads((export / "model_spec.json").read_text())
    net = build_model(spec)
    load_weights_npz(net, str(export / "weights.npz"))
    x = preprocess(p["images"], spec["input_size"])
    views = {"flip": [x, x[:, :, ::-1]], "d4": [np.rot90(v, k, axes=(1, 2)) for v in (x, x[:, :, ::-1]) for k in range(4)]}
    local = local_profile()
    zips = {}
    for tta in ("flip", "d4"):
        build_submission(export, tmp_path / f"{tta}.zip", local, BuildOptions(tta=tta, batch_size=3))
        zips[tta] = tmp_path / f"{tta}.zip"
    build_submission(export, tmp_path / "onnx.zip", local, BuildOptions(fmt="onnx"))
    build_submission(export, tmp_path / "keras.zip", local, BuildOptions(fmt="keras"))
    fp16 = build_submission(export, tmp_path / "fp16.zip", local, BuildOptions(fp16=True))
    plain = build_submission(export, tmp_path / "fp32.zip", local)
    assert fp16.manifest["files"]["weights.npz"]["bytes"] < 0.6 * plain.manifest["files"]["weights.npz"]["bytes"]
    for name, path in {**zips, "onnx": tmp_path / "onnx.zip", "keras": tmp_path / "keras.zip", "fp16": tmp_path / "fp16.zip"}.items():
        outcome = run_submission(path, local, {"x": p["images"]})
        assert outcome.status == "ok", (name, outcome.failure)
        if name in views:
            expected = sum(np.asarray(net(np.ascontiguousarray(v), training=False).numpy(), np.float64) for v in views[name]).argmax(1)
        else:
            expected = p["probs"].argmax(1)
        np.testing.assert_array_equal(outcome.outputs["x"], expected, err_msg=name)


def test_cli_build_keras_format_fails_its_check_for_an_older_runtime(tmp_path):
    """Our Keras is newer than 3.4.1: the .keras format is built but check rejects it, exit 1, with the reason."""
    run, export = shared_export()
    result = CliRunner().invoke(main, ["build-submission", str(export), "-o", str(tmp_path / "k.zip"), "--format", "keras", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert [i["code"] for i in data["check"]["issues"]] == ["keras_version"]
    assert "3.4.1" in data["check"]["issues"][0]["message"]


def test_cli_build_small_profile_refuses_and_forced_check_reports_too_large(tmp_path):
    run, export = shared_export()
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.tiny]\ncontract = 2024\nsize_limit_mb = 0.01\n')
    args = ["build-submission", str(export), "-o", str(tmp_path / "t.zip"), "--profile", "tiny", "--profiles-file", str(profiles)]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "upload limit this profile (tiny) assumes" in refused.output, refused.output
    assert not (tmp_path / "t.zip").exists()
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0 and "too_large" in forced.output and (tmp_path / "t.zip").exists(), forced.output
    checked = CliRunner().invoke(main, ["check", str(tmp_path / "t.zip"), "--profile", "tiny", "--profiles-file", str(profiles)])
    assert checked.exit_code == 1 and "too_large" in checked.output  # check itself still fails it


def test_failing_check_json_is_one_document_with_findings_and_an_error(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model.py", "import numpy as np\n\nclass Predictor:\n    pass\n")
    result = CliRunner().invoke(main, ["check", str(bad), "--profile", "an2dl-2024", "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    errors = [i for i in payload["issues"] if i["severity"] == "error"]
    assert payload["ok"] is False and errors and payload["errors"] == len(errors)
    assert payload["error"]["kind"] == "check" and payload["error"]["errors"] == len(errors)
    assert payload["error"]["message"].startswith(errors[0]["message"])
    result = CliRunner().invoke(main, ["check", str(bad), "--profile", "an2dl-2024"])
    assert result.exit_code == 1 and result.stdout.strip()  # the text report is unchanged: findings, no JSON
