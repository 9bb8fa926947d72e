"""The one corruption definition (toolkit/corruptions.py): every family is uint8 in and out, deterministic under its
seed, independent of the batch, and grows with severity; the photometric families do what their table says."""

from __future__ import annotations

import numpy as np
import pytest

from test_shift import _cells
from toolkit import corruptions


def test_families_and_tables():
    assert len(corruptions.MEDMNIST_C) == 11 and corruptions.MEDMNIST_C + corruptions.EXTRA == corruptions.FAMILIES
    assert set(corruptions.EXTRA) == {"gaussian_noise", "shot_noise", "color_cast", "gamma", "haze"}
    assert all(len(corruptions.PARAMS[name]) == len(corruptions.SEVERITIES) for name in corruptions.FAMILIES)
    assert corruptions.unknown_families(["jpeg", "fog", "haze"]) == ["fog"]


@pytest.mark.parametrize("name", corruptions.FAMILIES)
def test_each_family_is_uint8_deterministic_and_grows_with_severity(name):
    images = _cells()
    before = images.copy()
    outs = [corruptions.corrupt(images, name, s, seed=7) for s in corruptions.SEVERITIES]
    np.testing.assert_array_equal(images, before)  # the input is never modified in place
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(outs[2], corruptions.corrupt(images, name, 3, seed=7))
    change = [np.abs(o.astype(np.int32) - images).mean() for o in outs]
    assert change[0] > 0, f"{name} severity 1 left the images unchanged"
    assert change[-1] > change[0], f"{name}: severity 5 changed less than severity 1 ({change})"


@pytest.mark.parametrize("name", ["motion_blur", "stain_deposits", "bubbles", "gaussian_noise", "shot_noise",
                                  "color_cast", "gamma", "haze"])
def test_random_families_depend_on_the_seed_but_not_on_the_batch(name):
    images = _cells(8)
    a = corruptions.corrupt(images, name, 4, seed=1)
    assert not np.array_equal(a, corruptions.corrupt(images, name, 4, seed=2)), name
    # image i's random parameters come from row i of one draw (or image i's own generator): a prefix batch gives the
    # same pixels, and so does a batch whose earlier images differ
    np.testing.assert_array_equal(corruptions.corrupt(images[:3], name, 4, seed=1)[:3], a[:3])
    other = images.copy()
    other[0] = 255 - other[0]
    np.testing.assert_array_equal(corruptions.corrupt(other, name, 4, seed=1)[1:], a[1:])


def test_photometric_families_match_their_definition():
    images = _cells(3)
    x = images.astype(np.float64)
    np.testing.assert_array_equal(corruptions.corrupt(images, "brightness_down", 5), np.clip(np.rint(x * 0.5), 0, 255))
    out = corruptions.corrupt(images, "contrast_down", 5).astype(np.float64)
    luma = x @ np.array([0.299, 0.587, 0.114])
    assert np.allclose(out.std(axis=(1, 2, 3)), 0.5 * x.std(axis=(1, 2, 3)), rtol=0.05)
    assert np.allclose((out @ np.array([0.299, 0.587, 0.114])).mean(axis=(1, 2)), luma.mean(axis=(1, 2)), atol=1.0)


def test_new_families_match_their_definition():
    flat = np.full((64, 32, 32, 3), 128, dtype=np.uint8)
    noise = corruptions.corrupt(flat, "gaussian_noise", 5).astype(np.float64) - 128
    assert noise.std() == pytest.approx(26.0, rel=0.05) and abs(noise.mean()) < 0.5
    shot = corruptions.corrupt(flat, "shot_noise", 5).astype(np.float64)  # Poisson: variance = mean at 50 photons
    assert (shot / 255 * 50).var() == pytest.approx(128 / 255 * 50, rel=0.1)
    cast = corruptions.corrupt(flat, "color_cast", 5).astype(np.float64).mean(axis=(1, 2)) / 128
    assert np.allclose(cast.mean(axis=1), 1.0, atol=0.01) and np.abs(cast - 1).max() == pytest.approx(0.33, abs=0.01)
    gamma = corruptions.corrupt(flat, "gamma", 5)[:, 0, 0, 0].astype(np.float64)
    expected = {round(255 * (128 / 255) ** 2.0), round(255 * (128 / 255) ** 0.5)}
    assert set(gamma.astype(int)) == expected  # raised or lowered per image, both occur in 64 images
    haze = corruptions.corrupt(np.zeros((4, 32, 32, 3), np.uint8), "haze", 5).astype(np.float64)
    assert 0.2 * 225 < haze.mean() < 0.9 * 255 and haze.std(axis=(1, 2)).mean() > 5  # a bright, uneven veil


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corruptions.corrupt(_cells(1), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(_cells(1), "jpeg", 6)
    with pytest.raises(ValueError, match="uint8"):
        corruptions.corrupt(_cells(1).astype(np.float32), "jpeg", 1)
