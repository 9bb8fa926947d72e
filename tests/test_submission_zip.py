"""SubmissionZip: the one reader of a submission zip; zip bombs are reported by check and refused before extraction."""

from __future__ import annotations

import json
import zipfile
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import local_profile
from toolkit.runtime.sandbox import run_submission
from toolkit.submission.check import check_submission
from toolkit.submission_zip import SubmissionZip

MODEL_PY = "import numpy as np\nclass Model:\n    def predict(self, X):\n        return np.zeros(len(X), dtype=np.int64)\n"


def _bomb(path: Path, mib: int = 300) -> Path:
    """A small zip whose one entry unpacks to `mib` MiB of zeros (deflate packs zeros ~1000:1)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.py", MODEL_PY)
        with zf.open("zeros.bin", "w", force_zip64=True) as handle:
            block = bytes(2**20)
            for _ in range(mib):
                handle.write(block)
    return path


def test_reader_serves_names_model_py_manifest_and_sizes(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.py", MODEL_PY)
        zf.writestr("manifest.json", json.dumps({"profile": {"name": "an2dl-2023"}}))
        zf.writestr("weights/a.npy", b"x" * 1000)
    with SubmissionZip(path) as sub:
        assert sub.names == ["model.py", "manifest.json", "weights/a.npy"] and sub.top_level() == {"model.py", "manifest.json", "weights"}
        assert sub.model_py == MODEL_PY and sub.manifest["profile"]["name"] == "an2dl-2023"
        assert sub.unpacked_bytes == len(MODEL_PY) + len(sub.read("manifest.json")) + 1000 and sub.size_bytes == path.stat().st_size
        assert sub.layout_issues() == []


def test_not_a_zip_is_one_line(tmp_path):
    path = tmp_path / "s.zip"
    path.write_text("not a zip")
    with pytest.raises(SubmissionError, match=r"s\.zip: not a readable zip file"):
        SubmissionZip(path)


def test_a_zip_bomb_is_reported_by_check_and_never_extracted(tmp_path):
    bomb = _bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 2 * 2**20
    profile = replace(local_profile(), unpacked_limit_mb=100.0)
    report = check_submission(bomb, profile)
    assert not report.ok and [i.code for i in report.issues] == ["too_large_unpacked"]
    assert report.unpacked_mb > 300 and "a zip bomb?" in report.issues[0].found
    with pytest.raises(SubmissionError, match="over the 100 MiB this profile allows"):
        run_submission(bomb, profile, {"x": np.zeros((1, 8, 8, 3), np.uint8)})
    dest = tmp_path / "out"
    with SubmissionZip(bomb) as sub, pytest.raises(SubmissionError, match="not extracted"):
        sub.extract(dest, 100.0)
    assert not any(dest.iterdir())  # nothing half-written


def test_a_bomb_in_the_manifest_is_never_read_into_memory(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.py", MODEL_PY)
        zf.writestr("manifest.json", b"{" + b" " * (64 * 2**20) + b"}")
    assert path.stat().st_size < 2**20
    with SubmissionZip(path) as sub, pytest.raises(SubmissionError, match="manifest.json' declares 64.0 MiB"):
        sub.manifest
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((2, 96, 96, 3), np.uint8), labels=np.zeros((2, 1), np.int64))
    result = CliRunner().invoke(main, ["simulate", str(path), "--data", str(data), "--profile", "local", "--json"])
    assert result.exit_code == 1 and "zip bomb" in json.loads(result.stdout)["error"]["message"]


def test_extraction_checks_the_free_disk(tmp_path, monkeypatch):
    bomb = _bomb(tmp_path / "bomb.zip", mib=20)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("toolkit.submission_zip.shutil.disk_usage", lambda _p: usage(2**30, 2**30 - 2**20, 2**20))
    with SubmissionZip(bomb) as sub, pytest.raises(SubmissionError, match="MiB free; not extracted"):
        sub.extract(tmp_path / "out", 4096.0)


def test_simulate_refuses_a_bomb_with_one_json_error(tmp_path):
    bomb = _bomb(tmp_path / "bomb.zip", mib=120)
    profiles = tmp_path / "p.toml"
    profiles.write_text("[profiles.small]\ncontract = 2024\nunpacked_limit_mb = 64\n")
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((4, 96, 96, 3), np.uint8), labels=np.zeros((4, 1), np.int64))
    result = CliRunner().invoke(main, ["simulate", str(bomb), "--data", str(data), "--profile", "small",
                                       "--profiles-file", str(profiles), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "submission" and "unpacked_limit_mb" in error["message"]
