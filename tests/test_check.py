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
    config = {"module": "keras", "class_name": "Functional", "config": {"layers": [
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
    "keras_too_new": ("good", P2024, {"extra": {"model.keras": keras_archive("3.15.1")}}, "keras_version",
                      ["model.keras", "Keras <= 3.4.1", "saved by Keras 3.15.1"]),
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


def test_keras2_runtime_rejects_any_keras3_archive(tmp_path):
    zip_path = zip_folder("good2023", tmp_path / "k.zip", extra={"model.keras": keras_archive("3.4.1")})
    messages = [i.message for i in check_submission(zip_path, P2023).issues]
    assert any("use --format portable" in m and "Keras 3.4.1" in m for m in messages), messages


def test_cli_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["check", str(zip_folder("good", tmp_path / "g.zip"))])
    assert good.exit_code == 0 and good.output.startswith("ok:"), good.output
    bad = runner.invoke(main, ["check", str(zip_folder("keras_cv", tmp_path / "b.zip")), "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["issues"][0]["code"] == "forbidden_import"


def test_check_never_imports_tensorflow(tmp_path):
    zip_path = zip_folder("good2023", tmp_path / "g.zip")
    code = ("import sys; from toolkit.runtime.profiles import get_profile; from toolkit.submission.check import check_submission;"
            f"r = check_submission({str(zip_path)!r}, get_profile('an2dl-2023')); print(r.ok, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
