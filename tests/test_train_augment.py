"""Augmentation presets: deterministic under a seed, values stay float32 0-255, each preset does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import ConfigError

tf = pytest.importorskip("tensorflow")

from toolkit.train.augment import PRESETS, Augmenter  # noqa: E402


def _batches(preset, seed, x, y, batch=8):
    aug = Augmenter(preset, seed)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).enumerate().map(lambda step, b: aug(b[0], b[1], step))
    return [(a.numpy(), b.numpy()) for a, b in ds]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 24)]
    return x, y


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_same_batches_and_range(preset, data):
    x, y = data
    first, second = _batches(preset, 3, x, y), _batches(preset, 3, x, y)
    for (a1, l1), (a2, l2) in zip(first, second):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(l1, l2)
    images = np.concatenate([a for a, _ in first])
    labels = np.concatenate([b for _, b in first])
    assert images.dtype == np.float32 and images.shape == x.shape
    assert images.min() >= 0.0 and images.max() <= 255.0
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)  # soft labels still sum to one
    if preset == "none":
        np.testing.assert_array_equal(images, x)
    else:
        assert np.abs(images - x).mean() > 5.0  # it really augments
        other = np.concatenate([a for a, _ in _batches(preset, 4, x, y)])
        assert not np.array_equal(images, other)  # and the seed matters


def test_strong_mixes_labels_basic_does_not(data):
    x, y = data
    strong = np.concatenate([b for _, b in _batches("strong", 0, x, y, batch=4)])
    basic = np.concatenate([b for _, b in _batches("basic", 0, x, y, batch=4)])
    assert ((strong > 0.01) & (strong < 0.99)).any()
    np.testing.assert_array_equal(basic, y)


def test_geometric_only_part_of_basic_keeps_pixels():
    # a flat image stays flat through flips, rotations, reflect-padded shifts and zoom: only colour changes move it
    x = np.full((8, 32, 32, 3), 100.0, dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.zeros(8, dtype=int)]
    (images, _), = _batches("basic", 0, x, y)
    per_image_std = images.reshape(8, -1, 3).std(axis=1)
    assert per_image_std.max() < 1.0


def test_unknown_preset():
    with pytest.raises(ConfigError, match="augment must be one of"):
        Augmenter("extreme")


def test_geometric_pass_draws_all_eight_exact_symmetries():
    from toolkit.train.augment import _geometric

    src = np.random.default_rng(1).integers(0, 256, (96, 16, 16, 3)).astype(np.float32)
    out = _geometric(tf.constant(src), tf.constant([1, 2], tf.int64), shift=0.0, zoom=0.0).numpy()

    def symmetries(a):
        return [np.rot90(a, k) for k in range(4)] + [np.rot90(a.transpose(1, 0, 2), k) for k in range(4)]

    found = [next(i for i, c in enumerate(symmetries(s)) if np.allclose(c, o, atol=1e-3)) for s, o in zip(src, out)]
    assert sorted(set(found)) == list(range(8))  # each image is exactly one flip/rotation, and all 8 occur
