"""The data commands through click (CliRunner) and once through the installed `cbtool` entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("demo")
    result = _run("demo-data", "-o", str(d / "demo.npz"), "--n", "900", "--seed", "2", "--truth", str(d / "truth.json"), "--json")
    assert result.exit_code == 0, result.output
    return d / "demo.npz", json.loads((d / "truth.json").read_text())


def test_demo_data_json(demo):
    path, truth = demo
    result = _run("demo-data", "-o", str(path.with_name("again.npz")), "--n", "900", "--seed", "2", "--json")
    payload = json.loads(result.output)
    assert payload["n"] == 900 and payload["planted"]["meme"] == 200
    assert path.read_bytes() == path.with_name("again.npz").read_bytes()  # deterministic, byte for byte


def test_inspect_table_and_json(demo):
    path, truth = demo
    table = _run("inspect", str(path))
    assert table.exit_code == 0 and "Immature granulocytes" in table.output and "exact copies" in table.output
    info = json.loads(_run("inspect", str(path), "--json").output)
    assert info["shape"] == [900, 96, 96, 3] and info["dtype"] == "uint8" and sum(info["class_counts"].values()) == 900
    with np.load(path) as raw:
        distinct = len(np.unique(raw["images"].reshape(900, -1), axis=0))
    assert info["exact_duplicates"] == 900 - distinct
    # exact + conflicting copies, and each meme's identical copies (3 of 4 raw, 1 of 4 one identical JPEG re-encode)
    assert info["exact_duplicates"] == len(truth["groups"]["exact"]) + len(truth["groups"]["conflict"]) + 2 * 98


def test_clean_json_removed_list_and_outputs(demo, tmp_path):
    path, truth = demo
    result = _run("clean", str(path), "-o", str(tmp_path / "clean.npz"), "--report", str(tmp_path / "rep"), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    removed = payload["removed"]
    assert list(removed[0])[:3] == ["index", "reason", "group"]
    memes = {m for g in truth["groups"]["meme"] for m in g}
    assert memes <= {r["index"] for r in removed if r["reason"] == "outlier_cluster"}
    with np.load(tmp_path / "clean.npz") as cleaned:
        kept = cleaned["original_indices"]
        assert cleaned["labels"].shape == (len(kept), 1) and len(kept) == 900 - len(removed)
        assert not set(kept.tolist()) & {r["index"] for r in removed}
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["index"] for r in report["removed"]] == [r["index"] for r in removed]
    assert (tmp_path / "rep" / "sheet_outlier_cluster.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "sheet_near_duplicate.png").exists()


def test_clean_dry_run_writes_nothing_and_options(demo, tmp_path):
    path, _ = demo
    dry = json.loads(_run("clean", str(path), "--dry-run", "--json", "--conflicts", "keep-majority", "--threshold", "4").output)
    assert dry["dry_run"] and dry["config"]["conflicts"] == "keep-majority" and dry["config"]["phash_threshold"] == 4
    assert not list(tmp_path.iterdir())
    missing = _run("clean", str(path))
    assert missing.exit_code == 1 and "--output" in missing.output


def test_split_command(demo, tmp_path):
    path, _ = demo
    payload = json.loads(_run("split", str(path), "--val", "0.2", "--test", "0.1", "--seed", "1", "-o", str(tmp_path / "s"), "--json").output)
    assert set(payload["splits"]) == {"train", "val", "test"}
    assert sum(s["n"] for s in payload["splits"].values()) == 900
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["test.npz", "train.npz", "val.npz"]


def test_bad_file_gets_one_line_error_and_exit_1(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    for cmd in (["inspect"], ["clean", "--dry-run"], ["split", "-o", str(tmp_path / "s")]):
        result = _run(*cmd, str(bad))
        assert result.exit_code == 1
        assert result.output.strip().count("\n") == 0 and result.output.startswith("error: ") and "bad.npz" in result.output
        payload = json.loads(_run(*cmd, str(bad), "--json").output)
        assert payload["error"]["kind"] == "data"


def test_pickle_needs_allow_pickle(tmp_path):
    path = tmp_path / "old.npz"
    rng = np.random.default_rng(0)
    np.savez(path, data=rng.integers(0, 256, (6, 96, 96, 3)).astype(np.float32), labels=np.array(["healthy", "unhealthy"] * 3, dtype=object))
    refused = _run("inspect", str(path))
    assert refused.exit_code == 1 and "--allow-pickle" in refused.output
    allowed = json.loads(_run("inspect", str(path), "--allow-pickle", "--json").output)
    assert allowed["class_counts"] == {"healthy": 3, "unhealthy": 3}


def test_usage_error_is_exit_2(demo):
    path, _ = demo
    assert _run("clean", str(path), "--conflicts", "vote").exit_code == 2


def test_entry_point_end_to_end(demo, tmp_path):
    path, _ = demo
    exe = Path(sys.executable).with_name("cbtool")
    proc = subprocess.run([str(exe), "clean", str(path), "-o", str(tmp_path / "c.npz"), "--json", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_kept"] + len(json.loads(proc.stdout)["removed"]) == 900


def test_clean_and_split_keep_the_2023_schema(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (40, 96, 96, 3)).astype(np.float32)
    data[30:] = data[0]  # ten copies of one image under both labels: an out-of-context cluster
    labels = np.array(["healthy", "unhealthy"] * 20, dtype=object)
    np.savez(tmp_path / "public_data.npz", data=data, labels=labels)
    payload = json.loads(_run("clean", str(tmp_path / "public_data.npz"), "-o", str(tmp_path / "c.npz"), "--allow-pickle", "--json").output)
    assert sorted(r["index"] for r in payload["removed"]) == [0] + list(range(30, 40))
    assert {r["reason"] for r in payload["removed"]} == {"outlier_cluster"}
    with np.load(tmp_path / "c.npz", allow_pickle=True) as out:
        assert out["data"].dtype == np.float32 and out["data"].shape == (29, 96, 96, 3)
        assert set(out["labels"].tolist()) == {"healthy", "unhealthy"}
    result = _run("split", str(tmp_path / "c.npz"), "--allow-pickle", "--val", "0.3", "-o", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s" / "val.npz", allow_pickle=True) as val:
        assert "data" in val.files and val["labels"].dtype.kind in "UO"
