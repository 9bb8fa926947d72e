"""Budgets before upload: build-submission's size limit (refuse / --force / the budget block), the time planner
(toolkit/submission/plan.py: cached, linear in N and in TTA views, members summed, --plan refusing), and simulate's
predict seconds per image and images within the time limit.

The planner tests time a real convnext_test network once per module in this interpreter (the `local` profile's),
a few seconds; every later plan comes from that cache.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from submission_data import shared_export
from toolkit.cli import main
from toolkit.runtime.profiles import get_profile, local_profile
from toolkit.submission import plan as plan_mod
from toolkit.submission.build import over_size_message
from toolkit.submission.plan import PlanMember, member_from_dir, plan_submission


def _tiny_profiles(path: Path, size_limit_mb: float) -> Path:
    """A profiles file with `tiny`: the 2024 contract without fixed classes/image shape, a size limit of `size_limit_mb`."""
    path.write_text(f'[profiles.tiny]\nsize_limit_mb = {size_limit_mb}\n[profiles.tiny.contract]\nclass_name = "Model"\n'
                    'cwd = "submission"\n')
    return path


def _build(*args) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["build-submission", *map(str, args), "--json"])
    try:
        return result.exit_code, json.loads(result.output)
    except json.JSONDecodeError:  # pragma: no cover - shows what went wrong
        raise AssertionError(f"not one JSON document (exit {result.exit_code}):\n{result.output}\n{result.exception!r}")


# --- size -----------------------------------------------------------------------------------------------------------


def test_over_the_size_limit_refuses_leaves_no_zip_and_says_what_would_help(tmp_path):
    _run, export = shared_export()
    profiles = _tiny_profiles(tmp_path / "p.toml", 0.01)
    out = tmp_path / "sub" / "s.zip"
    result = CliRunner().invoke(main, ["build-submission", str(export), "-o", str(out), "--profile", "tiny",
                                       "--profiles-file", str(profiles)])
    assert result.exit_code == 1, result.output
    assert not out.exists() and list(out.parent.iterdir()) == []  # no zip, no temp file left beside it
    line = result.output.strip().splitlines()[-1]
    assert "MiB, over the 0.01 MiB upload limit this profile (tiny) assumes; not written" in line
    assert "--fp16 (~0.5x)" in line and "--int8 (~0.25x for kernels)" in line and "smaller variant than convnext_test" in line
    assert "fewer members" not in line and "--force" in line
    # with --fp16 already used, it is no longer suggested
    code, data = _build(export, "-o", out, "--profile", "tiny", "--profiles-file", profiles, "--fp16")
    assert code == 1 and not out.exists()
    assert "--fp16" not in data["error"]["message"] and "--int8" in data["error"]["message"]


def test_force_writes_it_and_the_check_warns(tmp_path):
    _run, export = shared_export()
    profiles = _tiny_profiles(tmp_path / "p.toml", 0.01)
    code, data = _build(export, "-o", tmp_path / "s.zip", "--profile", "tiny", "--profiles-file", profiles, "--force")
    assert code == 0, data
    size = (tmp_path / "s.zip").stat().st_size
    assert data["budget"] == {"bytes": size, "limit_bytes": int(0.01 * 2**20), "limit_mb": 0.01,
                              "fraction": pytest.approx(size / (0.01 * 2**20)), "over": True, "forced": True, "profile": "tiny"}
    too_large = [i for i in data["check"]["issues"] if i["code"] == "too_large"]
    assert [i["severity"] for i in too_large] == ["warning"] and data["check"]["ok"] and data["check"]["errors"] == 0
    human = CliRunner().invoke(main, ["build-submission", str(export), "-o", str(tmp_path / "t.zip"), "--profile", "tiny",
                                      "--profiles-file", str(profiles), "--force"])
    assert human.exit_code == 0 and "assumes" in human.output and "OVER the limit, written because of --force" in human.output


def test_budget_block_within_the_limit(tmp_path):
    _run, export = shared_export()
    code, data = _build(export, "-o", tmp_path / "s.zip")
    assert code == 0, data
    budget, size = data["budget"], (tmp_path / "s.zip").stat().st_size
    assert budget["bytes"] == size == data["bytes"] and budget["limit_bytes"] == 150 * 2**20
    assert budget["fraction"] == pytest.approx(size / (150 * 2**20)) and not budget["over"] and not budget["forced"]
    human = CliRunner().invoke(main, ["build-submission", str(export), "-o", str(tmp_path / "t.zip")])
    assert f"zip {size / 2**20:.1f} MiB of the 150 MiB this profile (an2dl-2024) assumes" in human.output


def test_the_suggestions_follow_the_situation():
    budget = {"bytes": 400 * 2**20, "limit_mb": 150.0, "profile": "an2dl-2024"}
    many = {"format": "portable", "fp16": True, "members": [{}, {}, {}], "model": {"variant": "convnext_large"}}
    text = over_size_message("s.zip", budget, many)
    assert "400.0 MiB, over the 150 MiB" in text and "fewer members (now 3)" in text and "--fp16" not in text
    assert "--int8" in over_size_message("s.zip", budget, {"format": "onnx", "model": {"variant": "convnext_large"}})
    keras = over_size_message("s.zip", budget, {"format": "keras", "model": {"variant": "convnext_large"}})
    assert "--fp16" not in keras and "--int8" not in keras and "smaller variant than convnext_large" in keras


# --- the time planner ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(cache dir, member, profile): the shared export's network timed once in this interpreter."""
    _run, export = shared_export()
    cache = tmp_path_factory.mktemp("plan-cache")
    member, profile = member_from_dir(export, "none", "portable"), local_profile()
    with pytest.MonkeyPatch.context() as patch:  # a short benchmark: these tests are about the arithmetic and the cache
        patch.setattr(plan_mod, "MIN_CALLS", 2)
        patch.setattr(plan_mod, "TARGET_S", 0.2)
        first = plan_submission([member], 1000, profile, 64, cache_dir=cache, python=sys.executable)
    return cache, member, profile, first


def _no_measuring(*_args, **_kwargs):
    raise AssertionError("the plan measured although the cache holds this member")


def test_a_second_plan_comes_from_the_cache(planned, monkeypatch):
    cache, member, profile, first = planned
    assert first.measured == 1 and not first.members[0].cached and len(list(cache.glob("*.json"))) == 1
    assert first.members[0].forward_s > 0 and first.import_s > 0 and first.runtime["python"] == sys.executable
    assert "grader's machine may differ" in first.note
    monkeypatch.setattr(plan_mod, "_measure", _no_measuring)
    again = plan_submission([member], 1000, profile, 64, cache_dir=cache, python=sys.executable)
    assert again.measured == 0 and again.members[0].cached and again.total_s == pytest.approx(first.total_s)


def test_the_estimate_is_linear_in_images_and_views_and_members_sum(planned, monkeypatch):
    cache, member, profile, first = planned
    monkeypatch.setattr(plan_mod, "_measure", _no_measuring)  # TTA is not part of the key: one network, one timing

    def plan(members, n):
        return plan_submission(members, n, profile, 64, cache_dir=cache, python=sys.executable)

    one, three = plan([member], 1000), plan([member], 3000)
    assert three.total_s - three.fixed_s == pytest.approx(3 * (one.total_s - one.fixed_s)) and three.fixed_s == one.fixed_s
    t = one.members[0]
    d4 = PlanMember(member.variant, member.spec, member.input_size, member.resize, "d4", member.fmt)
    flip = PlanMember(member.variant, member.spec, member.input_size, member.resize, "flip", member.fmt)
    per_view = t.forward_s + t.view_s
    assert plan([d4], 1000).s_per_image == pytest.approx(t.preprocess_s + 8 * per_view)
    assert plan([flip], 1000).s_per_image - one.s_per_image == pytest.approx(per_view)
    both = plan([member, d4], 1000)
    assert both.s_per_image == pytest.approx(one.s_per_image + plan([d4], 1000).s_per_image)
    assert both.fixed_s == pytest.approx(one.fixed_s + t.load_s + t.first_call_s)  # one import, two loads
    assert [m.views for m in both.members] == [1, 8]
    assert both.images_within_time_limit == int((both.time_limit_s - both.fixed_s) / both.s_per_image)


def test_plan_over_the_time_limit_refuses_unless_forced(planned, tmp_path, monkeypatch):
    cache, *_ = planned
    _run, export = shared_export()
    monkeypatch.setattr(plan_mod, "_default_cache", lambda: cache)
    monkeypatch.setattr(plan_mod, "_measure", _no_measuring)
    out = tmp_path / "s.zip"
    code, data = _build(export, "-o", out, "--profile", "local", "--plan", 10**9)
    assert code == 1 and not out.exists()
    message = data["error"]["message"]
    assert message.startswith("--plan: the grader would need about") and "over the 600 s this profile (local) assumes" in message
    assert "grader's machine may differ" in message
    code, data = _build(export, "-o", out, "--profile", "local", "--plan", 10**9, "--force")
    assert code == 0 and out.exists() and data["plan"]["n_images"] == 10**9 and not data["plan"]["within_limit"]
    result = CliRunner().invoke(main, ["build-submission", str(export), "-o", str(tmp_path / "t.zip"), "--profile",
                                       "local", "--plan", "500"])
    assert result.exit_code == 0, result.output
    assert result.output.index("plan for 500 images") < result.output.index("built ")  # the plan first, then the build
    assert "s/image" in result.output and "the grader's machine may differ" in result.output


def test_plan_refuses_members_it_cannot_time():
    with pytest.raises(Exception, match="TTA must be one of"):
        plan_submission([PlanMember("convnext_test", {}, 96, tta="d8")], 10, local_profile(), 64)
    with pytest.raises(Exception, match="no members"):
        plan_submission([], 10, local_profile(), 64)


# --- simulate -----------------------------------------------------------------------------------------------------


def test_simulate_reports_seconds_per_image_and_what_fits_the_limit(tmp_path):
    from test_simulate import N_CLASSES, _images, make_zip

    rng = np.random.default_rng(0)
    labels = np.arange(40) % N_CLASSES
    data = tmp_path / "held.npz"
    np.savez(data, images=_images(rng, labels), labels=labels)
    feats = _images(rng, labels).astype(np.float64).reshape(40, 8, 12, 8, 12, 3).mean(axis=(2, 4)).reshape(40, -1)
    zip_path = make_zip("good", tmp_path, np.stack([feats[labels == k].mean(axis=0) for k in range(N_CLASSES)]))
    result = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(data), "--profile", "local", "--json"])
    out = json.loads(result.output)
    assert result.exit_code == 0, out
    timing, limit = out["timing"], out["limits"]["time_limit_s"]
    graded = timing["predict_s"].get("clean/uint8")  # the grader's own pass: the contract's first dtype
    assert graded is not None, timing["predict_s"]
    assert out["predict_s_per_image"] == pytest.approx(graded / 40)
    fixed = sum(timing[k] or 0.0 for k in ("import_s", "load_s", "fit_s"))
    assert out["images_within_time_limit"] == int((limit - fixed) / out["predict_s_per_image"])
    assert timing["grader_pass_s"] == pytest.approx(fixed + 40 * out["predict_s_per_image"])
    human = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(data), "--profile", "local"])
    per_image = json.loads(CliRunner().invoke(main, ["--json", "simulate", str(zip_path), "--data", str(data), "--profile",
                                                      "local"]).output)["predict_s_per_image"]
    assert "predict per image (TTA and members included)" in human.output and f"{per_image:.2f}"[:3] in human.output
    assert "images in predict after import and load" in human.output and "the 600 s this profile assumes" in human.output
