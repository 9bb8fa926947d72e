"""The corruption suite: every family and severity, determinism under the seed, monotone severity, contract."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("name", shift.CORRUPTIONS)
def test_each_family_is_uint8_deterministic_and_grows_with_severity(name):
    images = _cells()
    before = images.copy()
    outs = [shift.corrupt(images, name, s, seed=7) for s in shift.SEVERITIES]
    np.testing.assert_array_equal(images, before)  # the input is never modified in place
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(outs[2], shift.corrupt(images, name, 3, seed=7))
    change = [np.abs(o.astype(np.int32) - images).mean() for o in outs]
    assert change[0] > 0, f"{name} severity 1 left the images unchanged"
    assert change[-1] > change[0], f"{name}: severity 5 changed less than severity 1 ({change})"


def test_random_families_depend_on_the_seed_but_not_on_the_batch():
    images = _cells(8)
    for name in ("motion_blur", "stain_deposits", "bubbles"):
        a = shift.corrupt(images, name, 4, seed=1)
        b = shift.corrupt(images, name, 4, seed=2)
        assert not np.array_equal(a, b), name
        # image i's random parameters come from row i of one draw: a prefix batch gives the same pixels
        np.testing.assert_array_equal(shift.corrupt(images[:3], name, 4, seed=1)[:3], a[:3])


def test_photometric_families_match_their_definition():
    images = _cells(3)
    x = images.astype(np.float64)
    np.testing.assert_array_equal(shift.corrupt(images, "brightness_down", 5), np.clip(np.rint(x * 0.5), 0, 255))
    out = shift.corrupt(images, "contrast_down", 5).astype(np.float64)
    luma = x @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(out.std(axis=(1, 2, 3)), 0.5 * x.std(axis=(1, 2, 3)), rtol=0.05)
    assert np.allclose((out @ np.array([0.299, 0.587, 0.114])).mean(axis=(1, 2)), luma.mean(axis=(1, 2)), atol=1.0)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        shift.corrupt(_cells(1), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        shift.corrupt(_cells(1), "jpeg", 6)
    with pytest.raises(ValueError, match="uint8"):
        shift.corrupt(_cells(1).astype(np.float32), "jpeg", 1)


def test_summarize_reports_mean_drop_and_worst():
    table = {"jpeg": {1: 0.9, 2: 0.8}, "bubbles": {1: 0.5, 2: 0.3}}
    s = shift.summarize(0.95, table)
    assert s["mean_accuracy"] == pytest.approx(0.625)
    assert s["drop"] == pytest.approx(0.325)
    assert s["worst_corruption"] == "bubbles"
    assert s["table"]["jpeg"] == {"1": 0.9, "2": 0.8}
