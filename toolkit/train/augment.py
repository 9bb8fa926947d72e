"""Augmentation for the `tf.data` training pipeline: named stages, a declared invariance, and the one corruption
definition (toolkit/corruptions.py).

Augmentation never enters the model that is exported: it runs on batches of float32 0-255 images (what
`toolkit.preprocessing.preprocess` produced) with one-hot labels, and returns the same value range.

Stages (`--augment`, a comma list, applied in this order whatever the order written):
- corrupt:     with probability CORRUPT_P an image gets one corruption family (drawn from the families not held out)
               at a severity 1-5, by calling `toolkit.corruptions.corrupt`, the function `simulate --shift` scores with.
- augmix:      AugMix (Hendrycks et al., ICLR 2020) with the same corruption families as its operations: every
               image becomes a Beta(1,1) blend of itself and a Dirichlet(1) mix of AUGMIX_WIDTH chains of 1 to
               AUGMIX_DEPTH corruptions at severity 1 to AUGMIX_SEVERITY, drawn from the families not held out.
- geometric:   one affine pass: a small rotation (+-ROTATION_DEG), shift and zoom always; flips and 90-degree
               rotations only where the declared invariance allows them.
- color:       Keras RandomBrightness and RandomContrast (+-10%).
- randaugment: Keras RandAugment (2 ops, factor 0.3) without its rotation op: the geometric stage owns orientation.
- mix:         MixUp or CutMix on half the batches (labels become soft).
Presets are aliases: none = (), basic = geometric,color; strong = basic + randaugment,mix; robust = basic + corrupt.

Invariance (`--invariance`, what the label does not depend on): none (the default: no flip, no 90-degree rotation),
hflip (left-right mirror), flip (both mirrors), d4 (the 8 symmetries of the square: blood cells, leaves).

Determinism: the corrupt stage and the geometric pass are pure functions of (seed, global step) (`stateless`, run in
a parallel map); every Keras layer gets its own seed derived from the run seed and its state advances once per batch
(`stateful`, run in a sequential map). So a given seed reproduces the same batches.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from toolkit import corruptions
from toolkit.errors import ConfigError

STAGES = ("corrupt", "augmix", "geometric", "color", "randaugment", "mix")
PRESETS = {
    "none": (),
    "basic": ("geometric", "color"),
    "strong": ("geometric", "color", "randaugment", "mix"),
    "robust": ("corrupt", "geometric", "color"),
}
# Invariance -> the symmetries the geometric stage may draw, as (transpose, mirror left-right, mirror up-down).
INVARIANCES = {"none": (0, 0, 0), "hflip": (0, 1, 0), "flip": (0, 1, 1), "d4": (1, 1, 1)}
INVARIANCE_TEXT = {
    "none": "no flips or 90-degree rotations (small rotations, shifts and zoom only)",
    "hflip": "left-right flips",
    "flip": "left-right and up-down flips",
    "d4": "flips and 90-degree rotations",
}
CORRUPT_P = 0.5  # per image: the probability of one corruption (family and severity drawn uniformly)
AUGMIX_WIDTH, AUGMIX_DEPTH, AUGMIX_SEVERITY = 3, 3, 3  # chains per image, most ops per chain, highest severity drawn
ROTATION_DEG, SHIFT, ZOOM = 10.0, 0.1, 0.1
_CORRUPT_SALT = 0xC0
_AUGMIX_SALT = 0xA3
_CORRUPTING = ("corrupt", "augmix")  # the stages that draw from corruptions.FAMILIES
_RANDAUGMENT_ROTATIONS = ("RandomRotation", "RandomFlip")


def parse_augment(text: str | Iterable[str], source: str = "augmentation") -> tuple[str, ...]:
    """A preset name or comma list of stages and presets -> the stages, in application order."""
    tokens = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    wanted: set[str] = set()
    for token in tokens or ["none"]:
        if token in PRESETS:
            wanted.update(PRESETS[token])
        elif token in STAGES:
            wanted.add(token)
        else:
            raise ConfigError(f"{source}: setting 'augment' must be a preset ({', '.join(PRESETS)}) or a comma list of stages "
                              f"({', '.join(STAGES)}), found {token!r}")
    return tuple(s for s in STAGES if s in wanted)


def trained_families(stages: Iterable[str], holdout: Iterable[str] = (), source: str = "augmentation") -> tuple[str, ...]:
    """The corruption families the corrupt stage draws from: all but `holdout`, none without that stage."""
    holdout = tuple(holdout)
    unknown = corruptions.unknown_families(holdout)
    if unknown:
        raise ConfigError(f"{source}: setting 'holdout_families' has unknown {', '.join(map(repr, unknown))}; expected names from "
                          f"{', '.join(corruptions.FAMILIES)}")
    if not set(stages) & set(_CORRUPTING):
        return ()
    families = tuple(f for f in corruptions.FAMILIES if f not in holdout)
    if not families:
        raise ConfigError(f"{source}: setting 'holdout_families' holds out every corruption family: the corrupt stage has none")
    return families


def training_record(augment: str, invariance: str, holdout: Iterable[str] = ()) -> dict:
    """What a run's augmentation was, as recorded for export and the submission manifest (read by simulate)."""
    stages = parse_augment(augment)
    return {"invariance": invariance, "stages": list(stages), "corruption_families": list(trained_families(stages, holdout)),
            "holdout_families": sorted(holdout)}


def describe(record: dict) -> str:
    """One line for people: the stages, the invariance and what it allows, the corruption families drawn/held out."""
    text = f"{', '.join(record['stages']) or 'none'}; invariance {record['invariance']} ({INVARIANCE_TEXT[record['invariance']]})"
    if record["corruption_families"]:
        text += f"; corruption families {', '.join(record['corruption_families'])}"
    if record["holdout_families"]:
        text += f"; held out {', '.join(record['holdout_families'])}"
    return text


class Augmenter:
    """`augmenter(images, labels, step) -> (images, labels)` on batches; images float32 (B,S,S,3) in 0-255."""

    def __init__(self, augment: str | Iterable[str] = "basic", seed: int = 0, invariance: str = "none",
                 holdout: Iterable[str] = ()):
        if invariance not in INVARIANCES:
            raise ConfigError(f"augmentation: setting 'invariance' must be one of {', '.join(INVARIANCES)}, found {invariance!r}")
        self.stages = parse_augment(augment)
        self.invariance = invariance
        self.families = trained_families(self.stages, holdout)
        self.seed = int(seed)
        self._layers: dict[str, Any] = {}
        if set(self.stages) & {"color", "randaugment", "mix"}:
            self._build_layers()

    @property
    def symmetries(self) -> tuple[str, ...]:
        """The symmetries of the square the geometric stage may apply, by name (empty: orientation is kept)."""
        if "geometric" not in self.stages:
            return ()
        return tuple(n for n, on in zip(("transpose", "hflip", "vflip"), INVARIANCES[self.invariance]) if on)

    def _build_layers(self) -> None:
        from keras import layers

        s = self.seed * 1000
        if "color" in self.stages:
            self._layers["brightness"] = layers.RandomBrightness(0.1, value_range=(0, 255), seed=s + 4)
            self._layers["contrast"] = layers.RandomContrast(0.1, value_range=(0, 255), seed=s + 5)
        if "randaugment" in self.stages:
            self._layers["randaugment"] = _randaugment(s + 6)
        if "mix" in self.stages:
            self._layers["mixup"] = layers.MixUp(alpha=0.2, seed=s + 7)
            self._layers["cutmix"] = layers.CutMix(factor=1.0, seed=s + 8)

    def __call__(self, images, labels, step):
        """Both parts in order: what `train_dataset` does in its two maps."""
        images, labels = self.stateless(images, labels, step)
        return self.stateful(images, labels, step)

    def stateless(self, images, labels, step):
        """The parts keyed only by (seed, step): corrupt, then the geometric pass. Safe in a parallel map."""
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        if "corrupt" in self.stages:
            images = self._numpy_stage(self.corrupt_batch, images, step)
        if "augmix" in self.stages:
            images = self._numpy_stage(self.augmix_batch, images, step)
        if "geometric" in self.stages:
            images = _geometric(images, self._seeds(step)[0], self.invariance)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    def stateful(self, images, labels, step):
        """The Keras layers, whose seeded state advances once per batch: run these in a sequential map."""
        import tensorflow as tf

        if "color" in self.stages:
            images = self._layers["brightness"](images, training=True)
            images = self._layers["contrast"](images, training=True)
        if "randaugment" in self.stages:
            images = self._layers["randaugment"](tf.clip_by_value(images, 0.0, 255.0), training=True)
        if "mix" in self.stages:
            images, labels = self._mix(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0), labels, self._seeds(step)[1])
        return tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0), labels

    def corruption_plan(self, n: int, step: int) -> list[tuple[str, int, np.ndarray, int]]:
        """(family, severity, image indices, seed) per corrupted group of a batch of `n`: a function of (seed, step)."""
        if not self.families:
            return []
        rng = np.random.default_rng([self.seed, int(step), _CORRUPT_SALT])
        hit = rng.random(n) < CORRUPT_P
        family, severity = rng.integers(len(self.families), size=n), rng.integers(1, 6, size=n)
        seed = int(rng.integers(2**31))
        groups = sorted({(int(f), int(s)) for f, s in zip(family[hit], severity[hit])})
        return [(self.families[f], s, np.flatnonzero(hit & (family == f) & (severity == s)), seed) for f, s in groups]

    def corrupt_batch(self, images: np.ndarray, step: int) -> np.ndarray:
        """The corrupt stage in numpy: float32 0-255 in and out; the chosen rows through `corruptions.corrupt`."""
        out = np.array(images, dtype=np.float32, copy=True)
        for name, severity, idx, seed in self.corruption_plan(len(out), step):
            raw = np.clip(np.rint(out[idx]), 0, 255).astype(np.uint8)
            out[idx] = corruptions.corrupt(raw, name, severity, seed)
        return out

    def augmix_batch(self, images: np.ndarray, step: int) -> np.ndarray:
        """The augmix stage in numpy: float32 0-255 in and out, a pure function of (seed, step) like corrupt_batch."""
        clean = np.asarray(images, dtype=np.float32)
        raw = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
        rng = np.random.default_rng([self.seed, int(step), _AUGMIX_SALT])
        weights = rng.dirichlet(np.ones(AUGMIX_WIDTH), size=len(raw)).astype(np.float32)
        keep = rng.beta(1.0, 1.0, size=len(raw)).astype(np.float32)[:, None, None, None]
        mixed = np.zeros_like(clean)
        for j in range(AUGMIX_WIDTH):
            mixed += weights[:, j, None, None, None] * self._augmix_chain(raw, rng).astype(np.float32)
        return keep * clean + (1.0 - keep) * mixed

    def _augmix_chain(self, raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One chain per image: 1..AUGMIX_DEPTH corruptions, each a family and severity drawn per image (grouped so
        `corruptions.corrupt` runs vectorised once per (family, severity))."""
        chain, depth = raw.copy(), rng.integers(1, AUGMIX_DEPTH + 1, size=len(raw))
        for d in range(AUGMIX_DEPTH):
            family, severity = rng.integers(len(self.families), size=len(raw)), rng.integers(1, AUGMIX_SEVERITY + 1, size=len(raw))
            seed, active = int(rng.integers(2**31)), depth > d
            for f, s in sorted({(int(a), int(b)) for a, b in zip(family[active], severity[active])}):
                idx = np.flatnonzero(active & (family == f) & (severity == s))
                chain[idx] = corruptions.corrupt(chain[idx], self.families[f], s, seed)
        return chain

    def _numpy_stage(self, fn, images, step):
        """Run a numpy stage (`fn(batch, step)`, float32 0-255 in and out) inside the tf.data map."""
        import tensorflow as tf

        out = tf.numpy_function(lambda x, s: fn(x, int(s)), [images, step], tf.float32, stateful=False)
        out.set_shape(images.shape)
        return out

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


def make_augmenter(augment: str = "basic", seed: int = 0, invariance: str = "none", holdout: Iterable[str] = ()) -> Augmenter:
    """The augmenter for an `--augment` value (preset or stage list), an invariance and held-out families."""
    return Augmenter(augment, seed, invariance, holdout)


def _randaugment(seed: int):
    """Keras RandAugment without its rotation: a +-108 degree turn (factor 0.3 of a full turn) would break any label
    that depends on orientation; the geometric stage applies only the symmetries the invariance declares."""
    from keras import layers

    layer = layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.3, seed=seed)
    kept = [n for n in layer._AUGMENT_LAYERS if type(getattr(layer, n)).__name__ not in _RANDAUGMENT_ROTATIONS]
    layer._AUGMENT_LAYERS = kept  # an instance attribute: the class list (what other RandAugments use) is untouched
    return layer


def _geometric(images, seed, invariance: str, rotation: float = ROTATION_DEG, shift: float = SHIFT, zoom: float = ZOOM):
    """Per image, in one bilinear, reflect-padded `keras.ops.image.affine_transform` pass: a symmetry of the square
    drawn from those `invariance` allows, a rotation by +-`rotation` degrees and a zoom by 1 +- `zoom` about the
    centre, and a shift by +- `shift` of the image size."""
    import keras
    import tensorflow as tf

    n = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    sym_seed, draw_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    allowed = tf.constant(INVARIANCES[invariance], tf.int32)
    bits = tf.random.stateless_uniform([n, 3], seed=sym_seed, minval=0, maxval=2, dtype=tf.int32) * allowed
    transpose = tf.cast(bits[:, 0], tf.float32)
    sx, sy = (1.0 - 2.0 * tf.cast(bits[:, i], tf.float32) for i in (1, 2))
    draws = tf.random.stateless_uniform([n, 4], seed=draw_seed, minval=-1.0, maxval=1.0)
    z = 1.0 + zoom * draws[:, 0]
    dy, dx = shift * size[0] * draws[:, 1], shift * size[1] * draws[:, 2]
    theta = draws[:, 3] * (rotation * np.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cy, cx = (size[0] - 1) / 2, (size[1] - 1) / 2
    # input offset from the centre = z * diag(sx, sy) @ (swap if transpose) @ rotation @ output offset from the centre
    a0, a1 = z * sx * (1 - transpose), z * sx * transpose
    b0, b1 = z * sy * transpose, z * sy * (1 - transpose)
    m00, m01, m10, m11 = a0 * cos + a1 * sin, a1 * cos - a0 * sin, b0 * cos + b1 * sin, b1 * cos - b0 * sin
    zeros = tf.zeros_like(z)
    matrix = tf.stack([m00, m01, cx + dx - m00 * cx - m01 * cy, m10, m11, cy + dy - m10 * cx - m11 * cy, zeros, zeros], axis=1)
    return keras.ops.image.affine_transform(images, matrix, interpolation="bilinear", fill_mode="reflect")
