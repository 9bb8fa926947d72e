"""The training and evaluation `tf.data` pipelines over in-memory uint8 arrays.

Each batch goes through `toolkit.preprocessing.preprocess` (the same numpy function the submission's `model.py`
runs), then augmentation, then class weights. Batch order is a stateless function of (seed, epoch), so a resumed
run sees the epochs it has not seen yet in the same order a straight run would.
"""

from __future__ import annotations

import hashlib

import numpy as np

from toolkit.errors import ConfigError, DataError
from toolkit.preprocessing import preprocess


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): `fraction` of every class with >= 2 images goes to validation."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        val.append(members[:take])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    if val_idx.size == 0:
        raise DataError("cannot hold out a validation split: no class has 2 or more images; pass --val")
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def class_weight_vector(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: `balanced` = n / (K * count) (0 for absent classes), `none` = ones."""
    if mode == "none":
        return np.ones(num_classes, dtype=np.float32)
    if mode != "balanced":
        raise ConfigError(f"class_weights must be 'balanced' or 'none', found {mode!r}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def steps_per_epoch(n: int, batch_size: int) -> tuple[int, int]:
    """(steps, effective batch size): full batches only, and one batch of everything when n < batch size."""
    batch = min(batch_size, n)
    return max(1, n // batch), batch


def data_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over the shapes and bytes of arrays: --resume refuses data that changed under it."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def train_dataset(images, labels, num_classes, *, input_size, resize, batch_size, seed, start_epoch, end_epoch,
                  augmenter, class_weights):
    """Batches (x float32 0-255, y one-hot or soft, sample weight) for epochs [start_epoch, end_epoch)."""
    import tensorflow as tf

    n = len(images)
    steps, batch = steps_per_epoch(n, batch_size)
    load = _loader(images, labels, num_classes, input_size, resize, batch)
    cw = tf.constant(class_weights, dtype=tf.float32)

    def epoch_batches(epoch):
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        idx = tf.reshape(perm[: steps * batch], [steps, batch])
        return tf.data.Dataset.from_tensor_slices((idx, epoch * steps + tf.range(steps, dtype=tf.int64)))

    def prepare(idx, step):
        return (*augmenter.stateless(*load(idx), step), step)

    def finish(x, y, step):
        x, y = augmenter.stateful(x, y, step)
        return x, y, tf.reduce_sum(y * cw, axis=-1)

    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch_batches)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Sequential on purpose: the Keras augmentation layers advance seeded state once per batch.
    ds = ds.map(finish)
    return _finish(ds)


def eval_dataset(images, labels, num_classes, *, input_size, resize, batch_size):
    """Batches (x, y one-hot) over every image once, in order, no augmentation."""
    import tensorflow as tf

    n = len(images)
    load = _loader(images, labels, num_classes, input_size, resize, None)
    starts = np.arange(0, n, batch_size, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((starts, np.minimum(starts + batch_size, n)))
    ds = ds.map(lambda a, b: load(tf.range(a, b)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds)


def _loader(images, labels, num_classes, input_size, resize, batch):
    import tensorflow as tf

    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]

    def gather(idx):
        return preprocess(images[idx], input_size, resize), onehot[idx]

    def load(idx):
        x, y = tf.numpy_function(gather, [idx], (tf.float32, tf.float32), stateful=False)
        x.set_shape((batch, input_size, input_size, 3))
        y.set_shape((batch, num_classes))
        return x, y

    return load


def _finish(ds):
    import tensorflow as tf

    options = tf.data.Options()
    # numpy_function datasets cannot be sharded by file; MirroredStrategy splits each batch instead.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
