"""Stratified, group-aware splits: train/val/test, or K folds. Near-duplicate groups never straddle two parts.

Groups are the connected components of `toolkit.data.clean.find_links` (exact and confirmed near copies), the same
graph `cbtool clean` judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.artifacts import FoldsDir
from toolkit.data.clean import CleanConfig, find_links
from toolkit.data.io import Dataset, save_dataset
from toolkit.errors import ConfigError, UsageError
from toolkit.fsutil import write_json
from toolkit.results import Result


@dataclass
class SplitResult:
    """Row indices (into the input) per split, and how many duplicate groups were kept together."""

    indices: dict[str, np.ndarray]
    groups_kept_together: int
    paths: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, ds: Dataset) -> dict:
        return {
            "splits": {name: {"n": int(len(idx)), "class_counts": ds.subset(idx).class_counts(), "path": self.paths.get(name)}
                       for name, idx in self.indices.items()},
            "groups_kept_together": self.groups_kept_together,
            "warnings": list(self.warnings),
        }


def split_indices(labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Assign whole groups to splits, class by class (a group counts under its majority label), hitting each
    fraction of every class as closely as whole groups allow. The remainder is 'train'."""
    total = sum(fractions.values())
    if any(f < 0 for f in fractions.values()) or total >= 1:
        raise ConfigError(f"split fractions must be >= 0 and sum to < 1, got {fractions}")
    rng = np.random.default_rng(seed)
    inverse, counts = _group_table(labels, groups)
    sizes, group_label = counts.sum(axis=1), counts.argmax(axis=1)  # a group counts under its majority label
    assign = np.zeros(len(counts), np.int64)  # 0 = train, k = k-th entry of fractions
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
                  config: CleanConfig | None = None, strict: bool = False) -> SplitResult:
    """Split `ds` into train/val(/test) npz files in `out_dir`, in the input's schema, keeping original indices.
    A class missing from a split is a warning, or with `strict` a ConfigError before anything is written."""
    # --val 0 --test F: only a held-out test split (the k-fold recipe splits the rest into folds afterwards)
    fractions = {**({"val": val} if val > 0 else {}), **({"test": test} if test > 0 else {})}
    if not fractions:
        raise UsageError(f"--val {val:g} and --test {test:g}: nothing to split off; give one of them a fraction above 0")
    groups, together = duplicate_groups(ds, config)
    indices = split_indices(ds.labels, groups, fractions, seed)
    asked = ", ".join(f"--{name} {f:g}" for name, f in fractions.items())
    fix = "gather more images of it or use larger fractions (duplicate copies count once: a group stays whole)"
    result = SplitResult(indices, together, warnings=_coverage(ds, indices, asked, fix, strict))
    out_dir = Path(out_dir)
    for name, idx in indices.items():
        if len(idx) == 0:
            raise ConfigError(f"split '{name}' would be empty ({len(ds)} images); use a larger fraction or more data")
        result.paths[name] = str(save_dataset(ds.subset(idx), out_dir / f"{name}.npz"))
    return result


def _coverage(ds: Dataset, parts: dict[str, np.ndarray], asked: str, fix: str, strict: bool) -> list[str]:
    """One line per class that some part (a split, or a fold's val) holds none of; raised instead under `strict`."""
    table = np.zeros((ds.num_classes, len(parts)), np.int64)
    for k, idx in enumerate(parts.values()):
        table[:, k] = np.bincount(ds.labels[idx], minlength=ds.num_classes)
    lines = []
    for c, row in enumerate(table):
        if row.all():
            continue
        missing = [name for name, n in zip(parts, row) if n == 0]
        counts = ", ".join(f"{name}: {n}" for name, n in zip(parts, row))
        lines.append(f"class '{ds.class_names[c]}' has {int(row.sum())} images, too few for {asked} ({counts}): "
                     f"{' and '.join(missing)} {'holds' if len(missing) == 1 else 'hold'} none of it, so its accuracy "
                     f"there is unmeasured; {fix}")
    if strict and lines:
        more = f" (and {len(lines) - 1} more classes)" if len(lines) > 1 else ""
        raise ConfigError(f"{ds.source or 'dataset'}: --strict: {lines[0]}{more}")
    return lines


def duplicate_groups(ds: Dataset, config: CleanConfig | None = None) -> tuple[np.ndarray, int]:
    """A group id (0..G-1) per row from the duplicate graph, and how many groups hold two or more rows."""
    links = find_links(ds.images, config or CleanConfig())
    _, groups, sizes = np.unique(links.component, return_inverse=True, return_counts=True)
    return groups.reshape(-1).astype(np.int64), int(np.sum(sizes > 1))


def _group_table(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group position, and a (groups, classes) table of label counts per group."""
    labels = np.asarray(labels, np.int64)
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.zeros((int(inverse.max(initial=-1)) + 1, int(labels.max(initial=-1)) + 1), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return inverse, counts


def fold_indices(labels: np.ndarray, groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of every row. Whole groups, largest first (seeded order among equals), each go to the fold
    holding the least of the group's classes, then the smallest fold: every class spreads as evenly as groups allow."""
    if k < 2:
        raise ConfigError(f"--folds must be >= 2, got {k}")
    inverse, counts = _group_table(labels, groups)
    share = counts / np.maximum(counts.sum(axis=0), 1)  # a group's fraction of each class
    order = np.random.default_rng(seed).permutation(len(counts))
    order = order[np.argsort(-counts.sum(axis=1)[order], kind="stable")]
    filled = np.zeros((k, counts.shape[1]), np.int64)  # rows per fold and class
    assign = np.zeros(len(counts), np.int64)
    for g in order.tolist():
        # integer counts times the same weights: folds with equal counts tie exactly, and the smaller fold wins
        fold = int(np.lexsort((np.arange(k), filled.sum(axis=1), filled @ share[g]))[0])
        assign[g] = fold
        filled[fold] += counts[g]
    return assign[inverse]


@dataclass
class FoldsResult(Result):
    """A k-fold split on disk: the folds.json path, per-fold sizes and class counts, and the duplicate groups kept whole."""

    output: str
    folds_json: str
    k: int
    seed: int
    n: int
    groups_kept_together: int
    folds: list[dict]  # per fold: fold (1-based), dir, train, val, class_counts (of val)
    warnings: list[str] = field(default_factory=list)  # classes some fold's val holds none of


def fold_dataset(ds: Dataset, out_dir: str | Path, k: int, seed: int = 0, config: CleanConfig | None = None,
                 strict: bool = False) -> FoldsResult:
    """Write DIR/fold_i/{train,val}.npz for i = 1..k (val = fold i) and DIR/folds.json (fold and group of every row).
    A class that some fold's val lacks is a warning, or with `strict` a ConfigError before anything is written."""
    groups, together = duplicate_groups(ds, config)
    fold = fold_indices(ds.labels, groups, k, seed)
    sizes = np.bincount(fold, minlength=k)
    if sizes.min() == 0:
        raise ConfigError(f"--folds {k}: fold {int(sizes.argmin()) + 1} would be empty ({len(ds)} images in "
                          f"{int(groups.max()) + 1} duplicate groups); use fewer folds or more data")
    parts = {f"fold {i + 1}": np.flatnonzero(fold == i) for i in range(k)}
    warnings = _coverage(ds, parts, f"--folds {k}", "gather more images of it or use fewer folds", strict)
    root = FoldsDir(out_dir)
    folds = []
    for i in range(k):
        where = root.fold(i + 1)
        val = ds.subset(np.flatnonzero(fold == i))
        save_dataset(ds.subset(np.flatnonzero(fold != i)), where.train)
        save_dataset(val, where.val)
        folds.append({"fold": i + 1, "dir": str(where), "train": len(ds) - len(val), "val": len(val),
                      "class_counts": val.class_counts()})
    result = FoldsResult(str(root), str(root.folds_json), k, seed, len(ds), together, folds, warnings)
    write_json(root.folds_json, {**result.to_dict(), "source": str(ds.source) if ds.source else None,
                                 "class_names": list(ds.class_names),
                                 "rows": {"original_index": ds.original_indices.tolist(), "fold": (fold + 1).tolist(),
                                          "group": groups.tolist()}})
    return result
