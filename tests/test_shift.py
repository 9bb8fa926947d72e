"""The simulate --shift suite: its default families, the one corruption definition it draws from, and its summary
(mean, drop, worst, and the seen/unseen split by what training drew)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import corruptions
from toolkit.runtime import shift


def _cells(n: int = 6, seed: int = 0) -> np.ndarray:
    """Blood-smear-like images: a pink background with a purple two-tone cell at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    out = np.empty((n, 96, 96, 3), dtype=np.uint8)
    for i in range(n):
        img = np.full((96, 96, 3), (228, 196, 208), dtype=np.float32) + rng.normal(0, 4, (96, 96, 3))
        d = np.hypot(yy - rng.uniform(30, 66), xx - rng.uniform(30, 66))
        img[d < 24] = (150, 82, 170)
        img[d < 11] = (88, 40, 128)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def test_suite_covers_eleven_families_at_five_severities():
    assert shift.CORRUPTIONS == (
        "pixelate", "jpeg", "defocus_blur", "motion_blur", "brightness_up", "brightness_down",
        "contrast_up", "contrast_down", "saturation", "stain_deposits", "bubbles",
    )  # fmt: skip
    assert shift.PARAMS["jpeg"][0] == 50 and shift.PARAMS["jpeg"][-1] == 7
    assert shift.PARAMS["brightness_up"][::4] == (1.1, 1.4) and shift.PARAMS["brightness_down"][::4] == (0.9, 0.5)
    assert shift.PARAMS["contrast_up"][::4] == (1.1, 1.3) and shift.PARAMS["contrast_down"][::4] == (0.9, 0.5)
    sets = list(shift.iter_suite(_cells(2)))
    assert len(sets) == 55
    assert {(n, s) for n, s, _ in sets} == {(n, s) for n in shift.CORRUPTIONS for s in shift.SEVERITIES}


def test_the_suite_is_the_one_corruption_definition():
    # simulate's families, tables and code are toolkit.corruptions', not a copy: the training stage draws from them too
    assert shift.corrupt is corruptions.corrupt and shift.PARAMS is corruptions.PARAMS
    assert shift.CORRUPTIONS == corruptions.MEDMNIST_C and set(shift.CORRUPTIONS) < set(corruptions.FAMILIES)
    images = _cells(2)
    for name, severity, out in shift.iter_suite(images, seed=4, corruptions=["haze"], severities=[2]):
        np.testing.assert_array_equal(out, corruptions.corrupt(images, name, severity, seed=4))


def test_summarize_reports_mean_drop_and_worst():
    table = {"jpeg": {1: 0.9, 2: 0.8}, "bubbles": {1: 0.5, 2: 0.3}}
    s = shift.summarize(0.95, table)
    assert s["mean_accuracy"] == pytest.approx(0.625)
    assert s["drop"] == pytest.approx(0.325)
    assert s["worst_corruption"] == "bubbles"
    assert s["table"]["jpeg"] == {"1": 0.9, "2": 0.8}


def test_summarize_marks_seen_and_unseen_families():
    table = {"jpeg": {1: 0.9, 2: 0.8}, "bubbles": {1: 0.5, 2: 0.3}, "haze": {1: 0.7, 2: 0.7}}
    s = shift.summarize(0.95, table, trained=["jpeg", "haze", "gamma"])
    assert s["seen_in_training"] == {"jpeg": True, "bubbles": False, "haze": True}
    assert s["unseen_mean_accuracy"] == pytest.approx(0.4) and s["seen_mean_accuracy"] == pytest.approx(0.775)
    assert s["mean_accuracy"] == pytest.approx(np.mean([0.9, 0.8, 0.5, 0.3, 0.7, 0.7]))  # today's mean is unchanged
    assert s["trained_families"] == ["gamma", "haze", "jpeg"]
    unknown = shift.summarize(0.95, table)  # a zip whose manifest does not say what training drew
    assert unknown["seen_in_training"] == {"jpeg": None, "bubbles": None, "haze": None}
    assert unknown["unseen_mean_accuracy"] is None and unknown["trained_families"] is None
    nothing = shift.summarize(0.95, table, trained=[])  # trained without the corrupt stage: every family is unseen
    assert nothing["unseen_mean_accuracy"] == pytest.approx(nothing["mean_accuracy"]) and nothing["seen_mean_accuracy"] is None


def test_seen_in_training_marks_for_a_run_trained_with_holdout(tmp_path):
    """train --holdout-families -> build-submission's manifest -> simulate --shift marks each family, JSON and table."""
    import json

    from click.testing import CliRunner

    from toolkit.cli import main
    from toolkit.runtime.simulate import SimulateResult
    from toolkit.simulate_report import render_text, tables
    from train_data import shapes_dataset

    data = shapes_dataset(n_per_class=8, num_classes=3, size=32, seed=2)
    np.savez(tmp_path / "d.npz", images=data.images, labels=data.labels)
    held, run, zip_path = ("bubbles", "jpeg", "haze"), tmp_path / "run", tmp_path / "s.zip"

    def cli(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    out = cli("train", tmp_path / "d.npz", "--model", "convnext_test", "--weights", "none", "--epochs", "1", "--batch-size", "8",
              "--input-size", "32", "--augment", "robust", "--holdout-families", ",".join(held), "-o", run)
    assert ("augmentation: corrupt, geometric, color; invariance none (no flips or 90-degree rotations (small rotations, "
            "shifts and zoom only)); corruption families pixelate") in out and "held out bubbles, haze, jpeg" in out
    bad = CliRunner().invoke(main, ["train", str(tmp_path / "d.npz"), "--holdout-families", "fog", "-o", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "setting 'holdout_families' has unknown 'fog'" in bad.output
    training = json.loads(cli("build-submission", run, "-o", zip_path, "--profile", "local", "--json"))["manifest"]["training"]
    assert training["holdout_families"] == sorted(held) and training["invariance"] == "none"
    assert training["corruption_families"] == [f for f in shift.FAMILIES if f not in held]
    result = json.loads(cli("simulate", zip_path, "--data", tmp_path / "d.npz", "--profile", "local", "--shift", "--shift-images", "6",
                            "--json"))
    s = result["shift"]
    assert s["seen_in_training"] == {f: f not in held for f in shift.CORRUPTIONS}  # haze is held out but not in the suite
    unseen = [a for f in ("jpeg", "bubbles") for a in s["table"][f].values()]
    assert s["unseen_mean_accuracy"] == pytest.approx(np.mean(unseen))
    assert s["mean_accuracy"] == pytest.approx(np.mean([a for per in s["table"].values() for a in per.values()]))
    text = render_text(SimulateResult.from_dict(result))
    assert "Mean over the 2 families training never drew" in text and "seen in training" in text
    rows = {row[0]: row[-1] for row in next(t for t in tables(SimulateResult.from_dict(result)) if t.key == "shift").rows}
    assert rows["jpeg"] == rows["bubbles"] == "no" and rows["pixelate"] == "yes"
    # a zip whose manifest does not say (built elsewhere, or before the record): unknown, never guessed
    result["shift"] = shift.summarize(s["clean_accuracy"], {f: {int(k): v for k, v in per.items()} for f, per in s["table"].items()})
    table = next(t for t in tables(SimulateResult.from_dict(result)) if t.key == "shift")
    assert {row[-1] for row in table.rows} == {"unknown"} and "Which families training saw is unknown" in table.intro
    result["shift"] = shift.summarize(s["clean_accuracy"], {f: {int(k): v for k, v in per.items()} for f, per in s["table"].items()},
                                      trained=[])  # trained without the corrupt stage
    table = next(t for t in tables(SimulateResult.from_dict(result)) if t.key == "shift")
    assert {row[-1] for row in table.rows} == {"no"} and "every one is unseen" in table.intro
