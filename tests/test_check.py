"""`cbtool check`: one fixture submission per failure kind, each caught with a message naming file/symbol,
expected and found. The check is static: it never imports TensorFlow."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.runtime.profiles import get_profile
from toolkit.submission.check import check_submission

FIXTURES = Path(__file__).parent / "fixtures" / "check_submissions"
P2024, P2023 = get_profile("an2dl-2024"), get_profile("an2dl-2023")


def zip_folder(folder: str, dest: Path, prefix: str = "", extra: dict[str, bytes] | None = None, skip: tuple = ()) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted((FIXTURES / folder).iterdir()):
            if path.name not in skip and path.name != "README.md":
                zf.write(path, prefix + path.name)
        for name, data in (extra or {}).items():
            zf.writestr(prefix + name, data)
    return dest


def keras_archive(keras_version: str, module: str = "keras.layers", class_name: str = "Dense") -> bytes:
    """A minimal .keras archive (config.json + metadata.json), as Keras 3 writes them."""
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": {"layers": [
        {"module": module, "class_name": class_name, "config": {"name": "l0"}}]}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": keras_version, "date_saved": "2026-01-01@00:00:00"}))
        zf.writestr("model.weights.h5", b"")
    return buffer.getvalue()


def codes(report: dict) -> list[str]:
    return [issue.code for issue in report.issues]


def test_good_submissions_pass(tmp_path):
    assert check_submission(zip_folder("good", tmp_path / "g.zip"), P2024).ok
    report = check_submission(zip_folder("good2023", tmp_path / "g23.zip"), P2023)
    assert report.ok, report.issues


CASES = {
    # case: (folder, profile, zip kwargs, expected code, fragments of the message)
    "wrapping_folder": ("good", P2024, {"prefix": "submission/"}, "wrapping_folder",
                        ["submission/model.py", "model.py at the zip root", "inside folder 'submission'"]),
    "wrong_class": ("wrong_class", P2024, {}, "class_name", ["class Model", "found class model"]),
    "wrong_signature": ("wrong_signature", P2024, {}, "signature", ["Model.predict", "predict(self, X)", "found predict(self, X, batch_size)"]),
    "keras_cv": ("keras_cv", P2024, {}, "forbidden_import", ["import keras_cv", "not known to be installed"]),
    "undefined_name": ("undefined_name", P2024, {}, "undefined_name", ["model.py: tfk_models line 14", "never defined or imported"]),
    "keras_cv_layer": ("good", P2024, {"extra": {"model.keras": keras_archive("3.4.1", "keras_cv.src.layers.preprocessing.random_cutout", "RandomCutout")}},
                       "keras_class", ["config.json class RandomCutout", "from keras_cv.src.layers"]),
    "missing_metadata": ("good2023", P2023, {"skip": ("metadata",)}, "missing_metadata", ["metadata", "empty file named `metadata`"]),
    "too_large": ("good", replace(P2024, size_limit_mb=0.0001), {}, "too_large", ["at most 0.0001 MiB", "largest entry model.py"]),
    "junk": ("good", P2024, {"extra": {"__MACOSX/._model.py": b"x", ".DS_Store": b"x"}}, "junk_entry", ["__MACOSX/._model.py"]),
    "init_2023": ("good", P2023, {"extra": {"metadata": b""}}, "class_name", ["class model", "found class Model"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_failure_kind_is_caught_with_its_message(tmp_path, case):
    folder, profile, kwargs, code, fragments = CASES[case]
    report = check_submission(zip_folder(folder, tmp_path / f"{case}.zip", **kwargs), profile)
    assert not report.ok
    assert code in codes(report), report.issues
    message = next(i.message for i in report.issues if i.code == code)
    for fragment in fragments:
        assert fragment in message, message


def test_signature_variants(tmp_path):
    source = "class Model:\n    def __init__(self, path):\n        pass\n    def predict(self, X, *, verbose):\n        pass\n"
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", source)
    messages = [i.message for i in check_submission(path, P2024).issues]
    assert any("Model.__init__: expected __init__(self); found __init__(self, path)" in m for m in messages), messages
    assert any("Model.predict" in m and "verbose" in m for m in messages), messages


def test_pyflakes_reports_only_undefined_names(tmp_path):
    source = ("import os\nimport json\nimport numpy as np\n__all__ = ['Model', 'helper']\n\n\nclass Model:\n"
              "    def __init__(self):\n        unused = 1\n        self.x = tfk_models\n\n"
              "    def predict(self, X):\n        return np.zeros(len(X)) + undefined_k\n")
    path = tmp_path / "u.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", source)
    issues = check_submission(path, P2024).issues
    assert [(i.code, i.symbol) for i in issues] == [("undefined_name", "helper line 4"), ("undefined_name", "tfk_models line 10"),
                                                    ("undefined_name", "undefined_k line 13")], issues
    assert "listed in __all__" in issues[0].message


def relative_zip(tmp_path: Path) -> Path:
    return zip_folder("relative_open", tmp_path / "rel.zip", extra={"weights.npz": b"not really an npz"})


def test_relative_opens_warn_when_the_grader_runs_in_the_submission_folder(tmp_path):
    report = check_submission(relative_zip(tmp_path), P2024)
    assert report.ok and report.errors == 0 and report.warnings == 3, report.issues
    assert [i.symbol for i in report.issues] == ["open('class_names.json') line 14", "np.load('weights.npz') line 16",
                                                 "os.listdir('.') line 17"]
    first = report.issues[0]
    assert (first.code, first.severity) == ("relative_path", "warning")
    for fragment in ("this profile assumes the grader runs in 'submission'", "it works there",
                     "os.path.join(os.path.dirname(os.path.abspath(__file__)), 'class_names.json')"):
        assert fragment in first.message, first.message


def test_relative_opens_fail_when_the_grader_runs_from_its_program_folder(tmp_path):
    toml = tmp_path / "profiles.toml"
    toml.write_text('[profiles.codabench-program]\npackages = ["numpy"]\nkeras_version = "3.4.1"\n'
                    '[profiles.codabench-program.contract]\ncwd = "program"\n')
    profile = get_profile("codabench-program", toml)
    report = check_submission(relative_zip(tmp_path), profile)
    assert not report.ok and report.errors == 3
    assert all(i.severity == "error" and "this profile assumes the grader runs in 'program'" in i.message
               and "it fails there" in i.message for i in report.issues), report.issues
    out = CliRunner().invoke(main, ["check", str(relative_zip(tmp_path)), "--profile", "codabench-program",
                                    "--profiles-file", str(toml)])
    assert out.exit_code == 1 and "[relative_path]" in out.output, out.output


def test_relative_open_fix_under_the_2023_contract_uses_path(tmp_path):
    source = "import os\nclass model:\n    def __init__(self, path):\n        self.m = open('weights.bin', 'rb')\n" \
             "    def predict(self, X):\n        return X\n"
    path = tmp_path / "r23.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", source)
        zf.writestr("metadata", b"")
        zf.writestr("weights.bin", b"x")
    report = check_submission(path, P2023)
    issue = next(i for i in report.issues if i.code == "relative_path")
    assert report.ok and issue.severity == "warning" and "os.path.join(path, 'weights.bin')" in issue.message
    assert "this profile assumes the grader runs in 'unknown'" in issue.message and "may fail" in issue.message


def test_warnings_exit_zero_and_json_counts_them(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(relative_zip(tmp_path))])
    assert result.exit_code == 0 and result.output.startswith("ok:") and "3 warning(s)" in result.output, result.output
    assert "[relative_path] warning: model.py: open('class_names.json')" in result.output
    data = json.loads(runner.invoke(main, ["check", str(relative_zip(tmp_path)), "--json"]).output)
    assert (data["ok"], data["errors"], data["warnings"]) == (True, 0, 3)
    assert {"ok", "zip", "profile", "contract", "entries", "zip_mb", "unpacked_mb", "issues", "schema_version"} <= set(data)
    assert data["issues"][0]["severity"] == "warning"


def test_cli_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["check", str(zip_folder("good", tmp_path / "g.zip"))])
    assert good.exit_code == 0 and good.output.startswith("ok:"), good.output
    bad = runner.invoke(main, ["check", str(zip_folder("keras_cv", tmp_path / "b.zip")), "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["issues"][0]["code"] == "forbidden_import"


def test_check_never_imports_tensorflow(tmp_path):
    """Even with a model file in the zip: the runtime's Keras is asked in a child, and the answer cached."""
    zip_path = zip_folder("good2023", tmp_path / "g.zip", extra={"model.keras": keras_archive("2.15.0")})
    code = ("import sys; from toolkit.runtime.profiles import get_profile; from toolkit.submission.check import check_submission;"
            f"r = check_submission({str(zip_path)!r}, get_profile('an2dl-2023')); print(r.ok, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False"]
