"""Augmentation presets for the `tf.data` training pipeline, from core Keras layers and TensorFlow ops only.

Augmentation never enters the model that is exported: it runs on batches of float32 0-255 images (what
`toolkit.preprocessing.preprocess` produced) with one-hot labels, and returns the same value range.

- none:   identity.
- basic:  flips, 90-degree rotations, small translation and zoom (all in one `keras.ops.image.affine_transform`
          pass), then Keras RandomBrightness and RandomContrast.
- strong: basic + keras RandAugment + CutMix or MixUp (which turn labels into soft labels).
- robust: basic + corruption-style transforms modelled on the blood-cell corruptions `simulate --shift` uses
          (DESIGN.md section 5): blur, JPEG degradation, brightness/contrast/saturation shifts, pixelation, noise.

Determinism: the TensorFlow ops draw from stateless generators keyed by (seed, global step) (`Augmenter.stateless`,
run in a parallel map); every Keras layer gets its own seed derived from the run seed and its state advances once
per batch (`Augmenter.stateful`, run in a sequential map). So a given seed reproduces the same batches.
"""

from __future__ import annotations

from typing import Any

PRESETS = ("none", "basic", "strong", "robust")

# Per-image probability of each corruption family in the robust preset.
CORRUPTION_P = 0.2


class Augmenter:
    """`augmenter(images, labels, step) -> (images, labels)` on batches; images float32 (B,S,S,3) in 0-255."""

    def __init__(self, preset: str, seed: int = 0):
        if preset not in PRESETS:
            from toolkit.errors import ConfigError

            raise ConfigError(f"augment must be one of {', '.join(PRESETS)}, found {preset!r}")
        self.preset = preset
        self.seed = int(seed)
        self._layers: dict[str, Any] = {}
        if preset != "none":
            self._build_layers()

    def _build_layers(self) -> None:
        from keras import layers

        s = self.seed * 1000
        # Flips, rotations, translation and zoom are one affine pass (`_geometric`): Keras' RandomFlip,
        # RandomTranslation and RandomZoom plus a rot90 cost several resampling passes per batch, and with a small
        # network that starved training (0.51x of a plain fit for convnext_test on 2 cores).
        self._layers["brightness"] = layers.RandomBrightness(0.1, value_range=(0, 255), seed=s + 4)
        self._layers["contrast"] = layers.RandomContrast(0.1, value_range=(0, 255), seed=s + 5)
        if self.preset == "strong":
            self._layers["randaugment"] = layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.3, seed=s + 6)
            self._layers["mixup"] = layers.MixUp(alpha=0.2, seed=s + 7)
            self._layers["cutmix"] = layers.CutMix(factor=1.0, seed=s + 8)
        if self.preset == "robust":
            self._layers["blur"] = layers.RandomGaussianBlur(
                factor=(CORRUPTION_P, CORRUPTION_P), kernel_size=5, sigma=(0.5, 2.0), value_range=(0, 255), seed=s + 9
            )

    def __call__(self, images, labels, step):
        """Both parts in order: what `train_dataset` does in its two maps."""
        images, labels = self.stateless(images, labels, step)
        return self.stateful(images, labels, step)

    def stateless(self, images, labels, step):
        """The part keyed only by (seed, step): the geometric pass and the robust corruptions. Safe in a parallel map."""
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        if self.preset == "none":
            return images, labels
        seeds = self._seeds(step)
        images = _geometric(images, seeds[0], shift=0.1, zoom=0.1)
        if self.preset == "robust":
            images = _corrupt(images, seeds[2:])
        return tf.clip_by_value(images, 0.0, 255.0), labels

    def stateful(self, images, labels, step):
        """The Keras layers, whose seeded state advances once per batch: run these in a sequential map."""
        import tensorflow as tf

        if self.preset == "none":
            return images, labels
        images = self._layers["brightness"](images, training=True)
        images = self._layers["contrast"](images, training=True)
        if self.preset == "robust":
            images = tf.cast(self._layers["blur"](tf.clip_by_value(images, 0.0, 255.0), training=True), tf.float32)
        if self.preset == "strong":
            images = self._layers["randaugment"](tf.clip_by_value(images, 0.0, 255.0), training=True)
            images, labels = self._mix(tf.clip_by_value(images, 0.0, 255.0), labels, self._seeds(step)[1])
        return tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0), labels

    def _seeds(self, step):
        import tensorflow as tf

        return tf.random.experimental.stateless_split(tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)]), 8)

    def _mix(self, images, labels, seed):
        """With probability 1/2 apply MixUp or CutMix (1/4 each) to the batch; labels become soft."""
        import tensorflow as tf

        u = tf.random.stateless_uniform([], seed=seed)
        labels = tf.cast(labels, tf.float32)

        def apply(name):
            def branch():
                out = self._layers[name]({"images": images, "labels": labels}, training=True)
                return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

            return branch

        return tf.case([(u < 0.25, apply("mixup")), (u < 0.5, apply("cutmix"))], default=lambda: (images, labels))


def make_augmenter(preset: str, seed: int = 0) -> Augmenter:
    """The augmenter for a preset name (`none`, `basic`, `strong`, `robust`)."""
    return Augmenter(preset, seed)


def _corrupt(images, seeds):
    """Each corruption family hits each image with probability CORRUPTION_P, at a random severity."""
    import tensorflow as tf

    for fn, seed in zip((_jpeg, _brightness, _contrast, _saturation, _pixelate, _noise), tf.unstack(seeds)):
        picked_seed, param_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        mask = tf.random.stateless_uniform(tf.shape(images)[:1], seed=picked_seed) < CORRUPTION_P
        images = tf.clip_by_value(tf.where(mask[:, None, None, None], fn(images, param_seed), images), 0.0, 255.0)
    return images


def _per_image(images, seed, low, high):
    import tensorflow as tf

    return tf.random.stateless_uniform(tf.shape(images)[:1], seed=seed, minval=low, maxval=high)[:, None, None, None]


def _geometric(images, seed, shift: float, zoom: float):
    """Per image, in one bilinear, reflect-padded `keras.ops.image.affine_transform` pass: a uniformly drawn flip or
    90-degree rotation (the 8 symmetries of the square), a zoom by 1 +- `zoom` about the centre and a shift by
    +- `shift` of the image size."""
    import keras
    import tensorflow as tf

    n = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    sym_seed, draw_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    bits = tf.random.stateless_uniform([n, 3], seed=sym_seed, minval=0, maxval=2, dtype=tf.int32)
    transpose = tf.cast(bits[:, 0], tf.float32)
    sx, sy = (1.0 - 2.0 * tf.cast(bits[:, i], tf.float32) for i in (1, 2))
    draws = tf.random.stateless_uniform([n, 3], seed=draw_seed, minval=-1.0, maxval=1.0)
    z = 1.0 + zoom * draws[:, 0]
    dy, dx = shift * size[0] * draws[:, 1], shift * size[1] * draws[:, 2]
    cy, cx = (size[0] - 1) / 2, (size[1] - 1) / 2
    # input offset from the centre = z * diag(sx, sy) @ (swap if transpose) @ output offset from the centre
    a0, a1 = z * sx * (1 - transpose), z * sx * transpose
    b0, b1 = z * sy * transpose, z * sy * (1 - transpose)
    zeros = tf.zeros_like(z)
    matrix = tf.stack([a0, a1, cx + dx - a0 * cx - a1 * cy, b0, b1, cy + dy - b0 * cx - b1 * cy, zeros, zeros], axis=1)
    return keras.ops.image.affine_transform(images, matrix, interpolation="bilinear", fill_mode="reflect")


def _jpeg(images, seed):
    """JPEG re-encoding at a quality drawn per image between 7 and 50 (MedMNIST-C's severity range)."""
    import tensorflow as tf

    quality = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seed, minval=7, maxval=51, dtype=tf.int32)

    def one(args):
        image, q = args
        return tf.image.adjust_jpeg_quality(image / 255.0, q) * 255.0

    return tf.map_fn(one, (images, quality), fn_output_signature=tf.float32)


def _brightness(images, seed):
    return images * _per_image(images, seed, 0.5, 1.4)


def _contrast(images, seed):
    import tensorflow as tf

    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return (images - mean) * _per_image(images, seed, 0.5, 1.3) + mean


def _saturation(images, seed):
    import tensorflow as tf

    gray = tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    return gray + (images - gray) * _per_image(images, seed, 0.3, 1.7)


def _pixelate(images, seed):
    """Downsample by a factor of 2-4 (one per batch) and upsample back with nearest neighbour."""
    import tensorflow as tf

    size = tf.shape(images)[1:3]
    factor = tf.random.stateless_uniform([], seed=seed, minval=2, maxval=5, dtype=tf.int32)
    small = tf.image.resize(images, tf.maximum(size // factor, 1), method="area")
    return tf.image.resize(small, size, method="nearest")


def _noise(images, seed):
    import tensorflow as tf

    sigma_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    sigma = _per_image(images, sigma_seed, 2.0, 12.0)
    return images + sigma * tf.random.stateless_normal(tf.shape(images), seed=noise_seed)
