"""What `cbtool inspect` shows about a dataset: how it is stored, its shape, value range, classes, exact duplicates,
and the sanity findings a user should read before training on it."""

from __future__ import annotations

import dataclasses

import numpy as np

from toolkit.data.hashing import exact_groups, exact_hashes
from toolkit.data.io import Dataset

# Below this many images a class can hardly be learned, and a 10% validation split rounds its share to zero or one.
FEW_IMAGES = 10


def describe(ds: Dataset) -> dict:
    """What `cbtool inspect` shows: shape, dtype, value range, class counts, exact-duplicate count, stored arrays
    (key, dtype, shape, conversion) and warnings."""
    groups = exact_groups(exact_hashes(ds.images))
    _, counts = np.unique(groups, return_counts=True)
    return {
        "path": str(ds.source) if ds.source is not None else None,
        "schema": ds.schema,
        "n": len(ds),
        "shape": list(ds.images.shape),
        "dtype": str(ds.images.dtype),
        "value_range": [int(ds.images.min()), int(ds.images.max())],
        "class_counts": ds.class_counts(),
        "exact_duplicates": int((counts - 1).sum()),
        "exact_duplicate_groups": int((counts > 1).sum()),
        "stored": {role: dataclasses.asdict(array) for role, array in ds.stored.items()},
        "warnings": [*ds.warnings, *class_warnings(ds)],
    }


def class_warnings(ds: Dataset) -> list[str]:
    """One line per class that is absent or has fewer than FEW_IMAGES images."""
    where = ds.source if ds.source is not None else "dataset"
    lines = []
    for name, count in ds.class_counts().items():
        if count == 0:
            lines.append(f"{where}: class '{name}' has no images; a model trained on this file never sees it")
        elif count < FEW_IMAGES:
            lines.append(f"{where}: class '{name}' has only {count} of {len(ds)} images (fewer than {FEW_IMAGES}): "
                         f"too few to learn it or measure it; a split may leave none of them in val or test")
    return lines
