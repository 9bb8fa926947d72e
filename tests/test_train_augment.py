"""Augmentation stages and presets: deterministic under a seed, values stay float32 0-255, each does what it says;
the corrupt stage is the shift suite's own code (parity through the real tf.data pipeline), held-out families never
drawn."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import ConfigError

tf = pytest.importorskip("tensorflow")

from toolkit.runtime import shift  # noqa: E402
from toolkit.train import pipeline  # noqa: E402
from toolkit.train.augment import PRESETS, Augmenter, parse_augment  # noqa: E402


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


def test_unknown_preset_or_stage():
    with pytest.raises(ConfigError, match="setting 'augment' must be a preset .* found 'extreme'"):
        Augmenter("extreme")
    with pytest.raises(ConfigError, match="found 'blur'"):
        parse_augment("geometric,blur")
    with pytest.raises(ConfigError, match="setting 'invariance' must be one of none, hflip, flip, d4"):
        Augmenter("basic", invariance="rot")


def test_presets_are_aliases_of_stage_lists():
    assert parse_augment("basic") == ("geometric", "color") == parse_augment("color, geometric")
    assert parse_augment("robust") == ("corrupt", "geometric", "color") == parse_augment("basic,corrupt")
    assert parse_augment("strong") == ("geometric", "color", "randaugment", "mix")
    assert parse_augment("none") == () == parse_augment("")
    assert Augmenter("robust").families == shift.FAMILIES and Augmenter("basic").families == ()


def test_geometric_pass_draws_all_eight_exact_symmetries():
    from toolkit.train.augment import _geometric

    src = np.random.default_rng(1).integers(0, 256, (96, 16, 16, 3)).astype(np.float32)
    out = _geometric(tf.constant(src), tf.constant([1, 2], tf.int64), "d4", rotation=0.0, shift=0.0, zoom=0.0).numpy()

    def symmetries(a):
        return [np.rot90(a, k) for k in range(4)] + [np.rot90(a.transpose(1, 0, 2), k) for k in range(4)]

    found = [next(i for i, c in enumerate(symmetries(s)) if np.allclose(c, o, atol=1e-3)) for s, o in zip(src, out)]
    assert sorted(set(found)) == list(range(8))  # each image is exactly one flip/rotation, and all 8 occur


def test_corrupt_stage_is_the_shift_suites_code_through_the_real_pipeline():
    """Parity: every image the training pipeline corrupts equals `simulate --shift`'s corruption of the same image at
    the same family, severity and seed, byte for byte; the others pass untouched."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    aug = Augmenter("corrupt", seed=11)
    # one class per image: a batch's one-hot labels say which image sits in which row
    ds = pipeline.train_dataset(raw, np.arange(16), 16, input_size=32, resize="bilinear", batch_size=16, seed=2,
                                start_epoch=0, end_epoch=4, augmenter=aug, class_weights=np.ones(16, np.float32))
    drawn = set()
    for step, (x, y, _) in enumerate(ds):
        rows = raw[np.argmax(y.numpy(), axis=1)]
        expected = rows.astype(np.float32)
        for name, severity, idx, seed in aug.corruption_plan(16, step):
            expected[idx] = shift.corrupt(rows[idx], name, severity, seed)
            drawn.add(name)
        np.testing.assert_array_equal(x.numpy(), expected)
    assert len(drawn) >= 4  # the plan really corrupts, with several families


def test_held_out_families_are_never_drawn():
    held = ("bubbles", "haze", "jpeg")
    aug = Augmenter("robust", seed=0, holdout=held)
    drawn = {name for step in range(300) for name, _, _, _ in aug.corruption_plan(32, step)}
    assert drawn == set(shift.FAMILIES) - set(held)
    hit = np.mean([sum(len(idx) for _, _, idx, _ in aug.corruption_plan(32, k)) / 32 for k in range(300)])
    assert hit == pytest.approx(0.5, abs=0.03)  # CORRUPT_P of the images


def test_augmix_blends_chains_of_training_families_only(monkeypatch):
    """The augmix stage calls the one corruption definition, never with a held-out family or above
    AUGMIX_SEVERITY, keeps each image a blend of itself (not a replacement), and is a function of (seed, step)."""
    from toolkit import corruptions
    from toolkit.train import augment

    calls = []
    real = corruptions.corrupt
    monkeypatch.setattr(corruptions, "corrupt", lambda x, name, sev, seed=0: calls.append((name, sev)) or real(x, name, sev, seed))
    held = ("jpeg", "gaussian_noise")
    aug = Augmenter("augmix", seed=5, holdout=held)
    raw = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3)).astype(np.float32)
    out = aug.augmix_batch(raw, step=7)
    assert out.dtype == np.float32 and out.shape == raw.shape and out.min() >= 0 and out.max() <= 255
    assert {n for n, _ in calls} <= set(corruptions.FAMILIES) - set(held) and len({n for n, _ in calls}) >= 5
    assert max(s for _, s in calls) <= augment.AUGMIX_SEVERITY
    np.testing.assert_array_equal(out, aug.augmix_batch(raw, step=7))
    assert not np.array_equal(out, aug.augmix_batch(raw, step=8))
    moved = np.abs(out - raw).mean(axis=(1, 2, 3))
    assert (moved > 0).all() and moved.mean() < np.abs(raw - raw[::-1]).mean()
    record = augment.training_record("augmix", "none", held)
    assert record["stages"] == ["augmix"] and set(record["corruption_families"]) == set(corruptions.FAMILIES) - set(held)
