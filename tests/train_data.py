"""Synthetic image classes for the training tests: one colour and shape per class on a noisy background."""

from __future__ import annotations

import numpy as np

from toolkit.data.io import Dataset

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230), (230, 220, 40), (220, 40, 220), (40, 220, 220), (250, 140, 20), (130, 60, 200)]


def shapes_dataset(n_per_class: int = 12, num_classes: int = 4, size: int = 96, seed: int = 0) -> Dataset:
    """Class c = a blob of colour c (squares for even c, discs for odd c) at a random place and size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for c in range(num_classes):
        for _ in range(n_per_class):
            img = rng.integers(60, 120, (size, size, 3)).astype(np.float32)
            r = rng.integers(size // 6, size // 3)
            cy, cx = rng.integers(r, size - r, 2)
            mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if c % 2 == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[mask] = np.array(COLOURS[c % len(COLOURS)]) + rng.normal(0, 8, (int(mask.sum()), 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    order = rng.permutation(len(labels))
    names = [f"class_{c}" for c in range(num_classes)]
    return Dataset(np.stack(images)[order], np.array(labels, dtype=np.int64)[order], names, np.arange(len(labels)))
