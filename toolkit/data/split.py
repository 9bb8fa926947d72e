"""Stratified, group-aware train/val/test splits: near-duplicate groups never straddle two splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.data.clean import CleanConfig, find_links
from toolkit.data.io import Dataset, save_dataset
from toolkit.errors import ConfigError


@dataclass
class SplitResult:
    """Row indices (into the input) per split, and how many duplicate groups were kept together."""

    indices: dict[str, np.ndarray]
    groups_kept_together: int
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self, ds: Dataset) -> dict:
        return {
            "splits": {name: {"n": int(len(idx)), "class_counts": ds.subset(idx).class_counts(), "path": self.paths.get(name)}
                       for name, idx in self.indices.items()},
            "groups_kept_together": self.groups_kept_together,
        }


def split_indices(labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Assign whole groups to splits, class by class (a group counts under its majority label), hitting each
    fraction of every class as closely as whole groups allow. The remainder is 'train'."""
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total >= 1:
        raise ConfigError(f"split fractions must be >= 0 and sum to < 1, got {fractions}")
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse)
    group_label = np.zeros(len(uniq), np.int64)
    group_label[inverse] = labels  # right for singletons; groups get their majority label below
    for g in np.flatnonzero(sizes > 1):
        group_label[g] = np.bincount(labels[inverse == g]).argmax()
    assign = np.zeros(len(uniq), np.int64)  # 0 = train, k = k-th entry of fractions
    for c in np.unique(group_label):
        members = rng.permutation(np.flatnonzero(group_label == c))
        n_class = int(sizes[members].sum())
        quotas = [int(round(f * n_class)) for f in fractions.values()]
        filled = [0] * len(quotas)
        for g in members.tolist():
            # the first split still short of its quota takes the whole group
            for k, quota in enumerate(quotas):
                if filled[k] < quota and filled[k] + sizes[g] <= quota + max(1, sizes[g] // 2):
                    assign[g], filled[k] = k + 1, filled[k] + int(sizes[g])
                    break
    names = ["train", *fractions]
    per_row = assign[inverse]
    return {name: np.flatnonzero(per_row == k) for k, name in enumerate(names)}


def split_dataset(ds: Dataset, out_dir: str | Path, val: float = 0.1, test: float = 0.0, seed: int = 0,
                  config: CleanConfig | None = None) -> SplitResult:
    """Split `ds` into train/val(/test) npz files in `out_dir`, in the input's schema, keeping original indices."""
    fractions = {"val": val, **({"test": test} if test > 0 else {})}
    if val <= 0:
        raise ConfigError(f"--val must be > 0, got {val}")
    links = find_links(ds.images, config or CleanConfig())
    indices = split_indices(ds.labels, links.component, fractions, seed)
    together = int(sum(c > 1 for c in np.unique(links.component, return_counts=True)[1]))
    result = SplitResult(indices, together)
    out_dir = Path(out_dir)
    for name, idx in indices.items():
        if len(idx) == 0:
            raise ConfigError(f"split '{name}' would be empty ({len(ds)} images); use a larger fraction or more data")
        result.paths[name] = str(save_dataset(ds.subset(idx), out_dir / f"{name}.npz"))
    return result
