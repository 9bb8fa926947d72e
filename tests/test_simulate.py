"""`cbtool simulate` on fixture submissions: one per failure kind, a good one, and the report directory.

The fixtures (tests/fixtures/sim_submissions/) are numpy-only and run in the `local` profile, so each child run
costs a Python start-up, not a TensorFlow import.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "sim_submissions"
N_CLASSES = 8


def _images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Each class a colour and a position of a bright blob, plus noise: learnable, not trivially separable."""
    yy, xx = np.mgrid[0:96, 0:96]
    out = np.empty((len(labels), 96, 96, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        base = np.array([60 + 20 * label, 200 - 15 * label, 120 + 10 * (label % 3)], dtype=np.float32)
        img = base + rng.normal(0, 40, (96, 96, 3))
        cy, cx = 20 + 8 * (label % 4), 20 + 14 * (label // 4)
        img[np.hypot(yy - cy - rng.normal(0, 6), xx - cx - rng.normal(0, 6)) < 12] += 60
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.arange(41) % N_CLASSES)  # odd n: the odd-batch check takes 7 of them
    images = _images(rng, labels)
    noisy = rng.random(len(labels)) < 0.25  # mislabelled rows keep even a good model below 100%
    labels = np.where(noisy, rng.integers(0, N_CLASSES, len(labels)), labels)
    path = tmp_path_factory.mktemp("data") / "heldout.npz"
    np.savez(path, images=images, labels=labels.reshape(-1, 1))
    return path, images, labels


@pytest.fixture(scope="module")
def centroids() -> np.ndarray:
    rng = np.random.default_rng(2)
    labels = np.arange(160) % N_CLASSES
    feats = _images(rng, labels).astype(np.float64).reshape(160, 8, 12, 8, 12, 3).mean(axis=(2, 4)).reshape(160, -1)
    return np.stack([feats[labels == k].mean(axis=0) for k in range(N_CLASSES)])


def make_zip(name: str, dest: Path, centroids: np.ndarray | None = None) -> Path:
    """Zip fixture `name` flat (files at the root, as the grader extracts), adding generated weights."""
    zip_path = dest / f"{name}.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted((FIXTURES / name).iterdir()):
            zf.write(f, f.name)
        if name in ("good", "good_2023", "load_error"):
            weights = dest / f"{name}_weights.npz"
            np.savez(weights, centroids=centroids if centroids is not None else np.zeros((N_CLASSES, 192)))
            zf.write(weights, "weights.npz")
    return zip_path


def run_cli(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["simulate", *map(str, args), "--profile", "local", "--json"])
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:  # pragma: no cover - shows what went wrong
        raise AssertionError(f"not one JSON document (exit {result.exit_code}):\n{result.output}\n{result.exception!r}")


@pytest.mark.parametrize(
    ("fixture", "kind", "phase", "needle", "extra"),
    [
        ("import_error", "import_error", "import", "keras_cv_that_the_grader_does_not_have", []),
        ("load_error", "load_error", "load", "layer_that_was_renamed", []),
        ("predict_error", "predict_error", "predict", "shapes", []),
        ("one_hot", "bad_output", "predict", "one-hot rows", []),
        ("wrong_length", "bad_output", "predict", "40 predictions for 41 images", []),
        ("sleeps", "timeout", "predict", "", ["--time-limit", "3"]),
        ("memory", "killed", "predict", "memory", ["--memory-limit", "300M"]),
        ("sys_exit", "exit", "predict", "", []),
    ],
)
def test_each_failure_kind_is_classified_and_exits_3(tmp_path, heldout, fixture, kind, phase, needle, extra):
    code, out = run_cli(make_zip(fixture, tmp_path), "--data", heldout[0], *extra)
    assert code == 3, out
    assert out["status"] == "failed"
    failure = out["failure"]
    assert (failure["kind"], failure["phase"]) == (kind, phase), failure
    assert needle.lower() in (failure["message"] + failure["stderr_tail"]).lower(), failure
    assert set(failure) >= {"kind", "phase", "message", "stderr_tail"}
    if kind in ("import_error", "load_error", "predict_error"):
        assert "Traceback" in failure["stderr_tail"] or needle in failure["stderr_tail"]


def test_memory_failure_says_the_limit_approximates_the_grader(tmp_path, heldout):
    code, out = run_cli(make_zip("memory", tmp_path), "--data", heldout[0], "--memory-limit", "300M")
    assert code == 3 and out["failure"]["kind"] == "killed"
    assert out["limits"]["memory_limit_mb"] == 300
    assert "approximates the grader" in out["limits"]["note"]


def _cwd_profile(tmp_path: Path, cwd: str) -> Path:
    """A local-interpreter profile whose contract is an2dl-2024's but for the grader's working directory."""
    path = tmp_path / f"cwd_{cwd}.toml"
    path.write_text(f'[profiles.cwd-{cwd}.contract]\nclass_name = "Model"\ncwd = "{cwd}"\n')
    return path


def test_relative_path_fails_where_the_grader_runs_elsewhere_with_the_fix_through_the_entry_point(tmp_path, heldout):
    cbtool = shutil.which("cbtool") or str(Path(sys.executable).with_name("cbtool"))
    zip_path = make_zip("relative_path", tmp_path)
    # run from inside an extracted copy: a working directory holding weights.keras must not rescue the submission
    workdir = tmp_path / "extracted"
    zipfile.ZipFile(zip_path).extractall(workdir)
    proc = subprocess.run(
        [cbtool, "simulate", str(zip_path), "--data", str(heldout[0]), "--profile", "cwd-program",
         "--profiles-file", str(_cwd_profile(tmp_path, "program")), "--json"],
        cwd=workdir, capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    out = json.loads(proc.stdout)
    failure = out["failure"]
    assert failure["kind"] == "load_error" and out["sandbox"]["cwd"] == "program"
    assert "'weights.keras' by a relative path" in failure["message"]
    assert "working directory outside the submission" in failure["message"] and "assumes the grader's is 'program'" in failure["message"]
    assert "os.path.dirname(os.path.abspath(__file__))" in failure["message"]


def test_relative_path_passes_with_a_warning_where_the_grader_runs_inside_the_submission(tmp_path, heldout):
    """an2dl-2024's grader ran inside the submission folder (its official template loads 'weights.keras' bare)."""
    code, out = run_cli(make_zip("relative_path", tmp_path), "--data", heldout[0])  # local: the 2024 contract
    assert code == 0 and out["status"] == "ok" and out["sandbox"]["cwd"] == "submission", out.get("failure")
    # check names the bare open statically; the run's own record of it is not repeated beside it
    warnings = [w for w in out["warnings"] if "'weights.keras'" in w]
    assert len(warnings) == 1 and "check: [relative_path]" in warnings[0], out["warnings"]
    assert "assumes the grader runs in 'submission'" in warnings[0] and "os.path.dirname(os.path.abspath(__file__))" in warnings[0]
    assert out["sandbox"]["relative_paths"] == ["weights.keras"]


def test_a_relative_open_check_cannot_see_is_named_by_the_run(tmp_path, heldout):
    zip_path = tmp_path / "dynamic.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("model.py", "import numpy as np\n\n\nclass Model:\n    def __init__(self):\n"
                                "        self.w = np.load(''.join(['w', '.npy']))  # a name built at run time\n\n"
                                "    def predict(self, X):\n        return np.zeros(len(X), dtype=np.int64)\n")
        zf.writestr("w.npy", _npy(np.zeros(3)))
    code, out = run_cli(zip_path, "--data", heldout[0])
    assert code == 0 and not any(w.startswith("check: [relative_path]") for w in out["warnings"])
    warning = next(w for w in out["warnings"] if w.startswith("model.py opened 'w.npy' relative to the working directory"))
    assert "os.path.join(os.path.dirname(os.path.abspath(__file__)), 'w.npy')" in warning


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_unknown_working_directory_runs_both_and_reports_the_difference(tmp_path, heldout, centroids):
    profiles = _cwd_profile(tmp_path, "unknown")
    args = ("--profile", "cwd-unknown", "--profiles-file", str(profiles), "--json")
    result = CliRunner().invoke(main, ["simulate", str(make_zip("relative_path", tmp_path)), "--data", str(heldout[0]), *args])
    out = json.loads(result.stdout)
    assert result.exit_code == 0 and out["sandbox"]["cwd"] == "submission", out.get("failure")
    assert any(w.startswith("works only if the grader runs inside the submission folder") and "'weights.keras'" in w
               for w in out["warnings"]), out["warnings"]
    result = CliRunner().invoke(main, ["simulate", str(make_zip("good", tmp_path, centroids)), "--data", str(heldout[0]), *args])
    out = json.loads(result.stdout)
    assert result.exit_code == 0 and out["sandbox"]["cwd"] == "program"  # portable: one run is enough
    assert not any("working directory" in w for w in out["warnings"])


def test_only_the_graders_own_pass_counts_against_the_time_limit(tmp_path, heldout):
    code, out = run_cli(make_zip("sixty_percent", tmp_path), "--data", heldout[0], "--time-limit", "3.5")
    timing = out["timing"]
    assert code == 0 and out["status"] == "ok", out["failure"]
    assert 0.5 * 3.5 < timing["grader_pass_s"] < 3.5 < timing["grader_pass_s"] + timing["probes_predict_s"]


def test_a_2023_zip_simulated_as_2024_names_the_profile_that_fits(tmp_path, heldout, centroids):
    code, out = run_cli(make_zip("good_2023", tmp_path, centroids), "--data", heldout[0])
    assert code == 3 and out["failure"]["kind"] == "load_error"
    first = out["failure"]["message"].splitlines()[0]
    assert "fits profile an2dl-2023" in first and "--profile an2dl-2023" in first


def test_good_submission_scores_what_the_model_scores_in_this_process(tmp_path, heldout, centroids):
    path, images, labels = heldout
    code, out = run_cli(make_zip("good", tmp_path, centroids), "--data", path, "--report", tmp_path / "report")
    assert code == 0, out
    assert out["status"] == "ok" and out["failure"] is None
    # the same model.py and weights, imported here directly
    direct_dir = tmp_path / "direct"
    zipfile.ZipFile(tmp_path / "good.zip").extractall(direct_dir)
    spec = importlib.util.spec_from_file_location("direct_model", direct_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = float(np.mean(module.Model().predict(images) == labels))
    assert 0.3 < expected < 1.0  # a real, imperfect classifier: equality below means something
    assert out["scores"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert out["scores_by_input"] == {"uint8": pytest.approx(expected), "float32": pytest.approx(expected)}
    assert len(out["scores"]["confusion_matrix"]) == N_CLASSES and out["scores"]["per_class"]["Basophil"]["support"] == int(np.sum(labels == 0))
    assert out["inputs"]["contract/single"]["n"] == 1 and out["inputs"]["contract/odd"]["n"] == 7
    timing = out["timing"]
    assert timing["import_s"] >= 0 and timing["load_s"] >= 0 and timing["clean_predict_s"] > 0 and timing["images_per_s"] > 0
    left = out["limits"]["time_limit_s"] - timing["import_s"] - timing["load_s"]
    assert out["predict_s_per_image"] == pytest.approx(timing["predict_s"]["clean/uint8"] / len(labels))
    assert out["images_within_time_limit"] == int(left / out["predict_s_per_image"])
    assert out["peak_memory_mb"] > 0
    report = tmp_path / "report"
    assert json.loads((report / "scores.json").read_text()) == {
        "accuracy": pytest.approx(expected), "balanced_accuracy": pytest.approx(out["scores"]["balanced_accuracy"]),
        "macro_f1": pytest.approx(out["scores"]["macro_f1"]),
    }  # fmt: skip
    assert (report / "confusion_matrix.png").stat().st_size > 1000 and (report / "report.html").exists()


def test_shift_scores_every_corruption_in_one_child_run(tmp_path, heldout, centroids):
    path, images, labels = heldout
    code, out = run_cli(make_zip("good", tmp_path, centroids), "--data", path, "--shift", "--shift-images", "24", "--seed", "3")
    assert code == 0, out
    s = out["shift"]
    assert s["images_per_set"] == 24 and s["seed"] == 3
    assert set(s["table"]) == {"pixelate", "jpeg", "defocus_blur", "motion_blur", "brightness_up", "brightness_down",
                               "contrast_up", "contrast_down", "saturation", "stain_deposits", "bubbles"}  # fmt: skip
    assert all(set(per) == {"1", "2", "3", "4", "5"} for per in s["table"].values())
    values = [a for per in s["table"].values() for a in per.values()]
    assert s["mean_accuracy"] == pytest.approx(np.mean(values))
    assert s["drop"] == pytest.approx(s["clean_accuracy"] - s["mean_accuracy"])
    assert s["table"]["brightness_down"]["5"] < s["clean_accuracy"]  # a colour-centroid model must suffer
    assert out["timing"]["shift_predict_s"] > 0


def test_progress_follows_the_child_through_every_input_set(tmp_path, heldout, centroids):
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.simulate import SimulateOptions, simulate

    calls, zip_path = [], make_zip("good", tmp_path, centroids)
    result = simulate(zip_path, heldout[0], get_profile("local"),
                      SimulateOptions(shift=True, shift_images=8), progress=lambda k, n: calls.append((k, n)))
    assert result.status == "ok"
    n = calls[0][1]
    assert calls[0] == (0, n) and n == 4 + 55  # uint8, float32, one image, odd batch; 11 corruptions x 5 severities
    assert sum(k for k, _ in calls) == n and all(total == n for _, total in calls)
    result = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(heldout[0]), "--profile", "local"])
    assert result.exit_code == 0 and "input sets predicted: 100%" in result.output  # the bar, on stderr
    assert re.search(r"the time limit allows about [\d,]+ images in predict", result.output)


def test_profile_defaults_to_the_one_the_zip_was_built_for(tmp_path, heldout, centroids):
    """As check and validate-preprocessing: without --profile, the manifest's profile, not an2dl-2024."""
    zip_path = make_zip("good", tmp_path, centroids)
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("manifest.json", json.dumps({"profile": {"name": "local"}}))
    result = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(heldout[0]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["profile"]["name"] == "local"


def test_a_class_missing_from_the_heldout_labels_is_not_a_bad_output(tmp_path, heldout, centroids):
    """Labels up to 6 imply 7 classes; the submission's manifest says 8, so predicting class 7 is legitimate."""
    _, images, labels = heldout
    path = tmp_path / "no_last_class.npz"
    np.savez(path, images=images, labels=np.where(labels == N_CLASSES - 1, 0, labels).reshape(-1, 1))
    zip_path = make_zip("good", tmp_path, centroids)
    code, out = run_cli(zip_path, "--data", path)
    assert code == 3 and out["failure"]["kind"] == "bad_output" and "expected 0..6" in out["failure"]["message"]
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("manifest.json", json.dumps({"classes": [f"c{k}" for k in range(N_CLASSES)]}))
    code, out = run_cli(zip_path, "--data", path)
    assert code == 0, out["failure"]
    assert len(out["class_names"]) == N_CLASSES and len(out["scores"]["confusion_matrix"]) == N_CLASSES
    (tmp_path / "few").mkdir()
    few = make_zip("good", tmp_path / "few", centroids)
    with zipfile.ZipFile(few, "a") as zf:
        zf.writestr("manifest.json", json.dumps({"classes": ["a", "b"]}))
    code, out = run_cli(few, "--data", heldout[0])  # more held-out classes than the model has: refused, not scored
    assert code == 1 and "held-out labels go up to 7 (8 classes), manifest.json lists 2 classes" in out["error"]["message"], out


def test_human_output_is_a_table_and_failure_exit_code_is_3(tmp_path, heldout):
    result = CliRunner().invoke(main, ["simulate", str(make_zip("one_hot", tmp_path)), "--data", str(heldout[0]), "--profile", "local"])
    assert result.exit_code == 3
    assert "FAILED: bad_output during predict" in result.output
    assert "np.argmax(output, axis=-1)" in result.output


def test_a_missing_zip_and_a_bad_memory_limit_are_usage_errors(tmp_path, heldout):
    code, out = run_cli(tmp_path / "missing.zip", "--data", heldout[0])
    assert code == 2 and "missing.zip" in out["error"]["message"] and out["error"]["kind"] == "usage", out
    code, out = run_cli(make_zip("good", tmp_path), "--data", heldout[0], "--memory-limit", "lots")
    assert code == 2 and "--memory-limit" in out["error"]["message"] and out["error"]["kind"] == "usage", out


def test_real_convnext_submission_scores_what_the_training_process_computed(tmp_path):
    """A convnext_test run -> build-submission -> simulate: the sandbox's accuracy equals the one the run's own
    process computed from its softmax (probe.npz), so nothing between training and the grader changed a prediction."""
    from export_data import make_run_dir

    from toolkit.runtime.profiles import local_profile
    from toolkit.submission.build import build_submission

    run = make_run_dir(tmp_path / "run", n_probe=24, seed=3)
    probe = np.load(run / "probe.npz")
    predicted = probe["probs"].argmax(axis=1)
    assert len(np.unique(predicted)) > 1, "the random model must not predict one class for every probe image"
    # labels: the run's own prediction for the first 16 images, a different class for the last 8 -> exactly 2/3
    labels = np.where(np.arange(24) < 16, predicted, (predicted + 1) % 3)
    np.savez(tmp_path / "heldout.npz", images=probe["images"], labels=labels)
    build_submission(run, tmp_path / "submission.zip", local_profile())
    code, out = run_cli(tmp_path / "submission.zip", "--data", tmp_path / "heldout.npz", "--time-limit", "300")
    assert code == 0, out
    assert out["scores"]["accuracy"] == pytest.approx(float(np.mean(predicted == labels))) == pytest.approx(2 / 3)
    assert out["scores_by_input"]["uint8"] == out["scores_by_input"]["float32"]
    assert out["timing"]["load_s"] > 0 and out["timing"]["images_per_s"] > 0


@pytest.mark.parametrize(("text", "mb"), [("4G", 4096), ("512M", 512), ("1.5g", 1536), ("800", 800), ("2GiB", 2048), ("300MB", 300)])
def test_memory_sizes_parse_to_megabytes(text, mb):
    from toolkit.runtime.simulate import parse_memory

    assert parse_memory(text) == mb


@pytest.mark.parametrize(
    ("message", "hinted"),
    [
        ("FileNotFoundError: [Errno 2] No such file or directory: 'weights.keras'", True),
        ("ValueError: File not found: filepath=weights.keras. Please ensure the file is an accessible `.keras` zip file.", True),
        ("FileNotFoundError: [Errno 2] Unable to synchronously open file (unable to open file: name = './weights.keras', errno = 2)", True),
        ("OSError: SavedModel file does not exist at: saved_model/{saved_model.pbtxt|saved_model.pb}", True),
        ("FileNotFoundError: [Errno 2] No such file or directory: '/opt/elsewhere/weights.keras'", False),
        ("FileNotFoundError: [Errno 2] No such file or directory: 'other.h5'", False),
        ("ValueError: weights.keras has the wrong shape", False),
    ],
)
def test_relative_path_hint_reads_numpy_keras_h5py_and_tf_messages(tmp_path, message, hinted):
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.diagnose import relative_path_hint as _relative_path_hint
    from toolkit.submission_zip import SubmissionZip

    zip_path = tmp_path / "s.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name in ("model.py", "weights.keras", "saved_model/saved_model.pb"):
            zf.writestr(name, "x")
    with SubmissionZip(zip_path) as sub:
        members = sub.top_level()
    hint = _relative_path_hint({"kind": "load_error", "message": message}, members, get_profile("an2dl-2024"))
    assert (hint is not None) == hinted, hint
    if hinted:
        assert "os.path.dirname(os.path.abspath(__file__))" in hint


def test_2023_contract_through_a_user_profile(tmp_path, heldout, centroids):
    """class model(path) and float32 input only, via a user TOML profile on this interpreter (no venv to build)."""
    path, images, labels = heldout
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.leaves]\ncontract = 2023\ninput_dtypes = ["float32"]\n')
    result = CliRunner().invoke(main, ["simulate", str(make_zip("good_2023", tmp_path, centroids)), "--data", str(path),
                                       "--profile", "leaves", "--profiles-file", str(profiles), "--json"])  # fmt: skip
    out = json.loads(result.output)
    assert result.exit_code == 0, out
    assert out["profile"]["contract"] == 2023 and list(out["scores_by_input"]) == ["float32"]
    assert set(out["inputs"]) == {"clean/float32", "contract/single", "contract/odd"}
    # the 2024 Model() class under the 2023 contract fails at load, naming what it looked for
    result = CliRunner().invoke(main, ["simulate", str(make_zip("good", tmp_path, centroids)), "--data", str(path),
                                       "--profile", "leaves", "--profiles-file", str(profiles), "--json"])  # fmt: skip
    failure = json.loads(result.output)["failure"]
    assert result.exit_code == 3 and failure["kind"] == "load_error" and "'model'" in failure["message"]


def test_with_shift_the_grader_limit_still_applies_to_the_clean_part(tmp_path, heldout):
    code, out = run_cli(make_zip("slow_load", tmp_path), "--data", heldout[0], "--shift", "--shift-images", "2", "--time-limit", "1")
    assert code == 3, out
    assert (out["failure"]["kind"], out["failure"]["phase"]) == ("timeout", "load")
    assert "over the 1 s limit" in out["failure"]["message"]
    assert out["timing"]["load_s"] >= 2.5


def pinned_2024_run(tmp_path: Path):
    """(an2dl-2024 profile, a convnext_test run dir, its decisive probe images, their labels = the run's own argmax),
    with tmp_path/heldout.npz holding them; skips the test when the pinned venv is absent."""
    from export_data import make_run_dir

    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.venv import find_venv

    profile = get_profile("an2dl-2024")
    if find_venv(profile.name, list(profile.packages)) is None:
        pytest.skip("the an2dl-2024 runtime venv does not exist yet (`cbtool runtime create an2dl-2024`)")
    run = make_run_dir(tmp_path / "run", n_probe=12, seed=5)
    probe = np.load(run / "probe.npz")
    # An untrained model's probabilities are nearly tied: keep the images whose top-2 margin dwarfs the 1e-6 that
    # separates TF 2.17 from this TF, and name every class (labels alone would imply fewer classes than the model has).
    top2 = np.sort(probe["probs"], axis=1)[:, -2:]
    keep = (top2[:, 1] - top2[:, 0]) > 1e-4
    assert keep.sum() >= 4, "the probe has too few decisive images for this test"
    images, labels = probe["images"][keep], probe["probs"][keep].argmax(axis=1)
    class_names = json.loads((run / "classes.json").read_text())["class_names"]
    np.savez(tmp_path / "heldout.npz", images=images, labels=labels, class_names=np.array(class_names))
    return profile, run, images, labels


def test_pinned_2024_runtime_with_shift(tmp_path):
    """The same flow in the grader's TF 2.17 / Keras 3.4.1 venv, with the corruption suite (skipped if the venv is absent)."""
    from toolkit.runtime.venv import find_venv
    from toolkit.submission.build import build_submission

    profile, run, _, _ = pinned_2024_run(tmp_path)
    build_submission(run, tmp_path / "submission.zip", profile)
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "submission.zip"), "--data", str(tmp_path / "heldout.npz"),
                                       "--profile", "an2dl-2024", "--shift", "--shift-images", "4", "--json"])  # fmt: skip
    out = json.loads(result.output)
    assert result.exit_code == 0, json.dumps(out.get("failure"))
    assert out["scores"]["accuracy"] == 1.0  # labels are what the training process predicted
    assert out["sandbox"]["python"] == str(find_venv(profile.name, list(profile.packages)))  # the pinned venv ran it
    assert len([k for k in out["timing"]["predict_s"] if k.startswith("shift/")]) == 55
    assert 0.0 <= out["shift"]["mean_accuracy"] <= 1.0 and out["shift"]["images_per_set"] == 4
