"""What `cbtool inspect` shows about a dataset: its shape, value range, classes and exact duplicates."""

from __future__ import annotations

import numpy as np

from toolkit.data.hashing import exact_groups, exact_hashes
from toolkit.data.io import Dataset


def describe(ds: Dataset) -> dict:
    """What `cbtool inspect` shows: shape, dtype, value range, class counts, exact-duplicate count."""
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
    }
