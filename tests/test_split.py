"""toolkit.data.split: stratified, group-aware, written in the input's schema with original indices."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.demo import make_demo
from toolkit.data.io import load_dataset, save_dataset
from toolkit.data.split import split_dataset, split_indices
from toolkit.errors import ConfigError


def test_groups_never_straddle_and_classes_are_stratified():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 3000)
    groups = np.arange(3000)
    for s in range(0, 600, 3):  # 200 groups of 3
        groups[s : s + 3] = s
        labels[s : s + 3] = labels[s]
    groups[900:960] = 900  # one big group
    labels[900:960] = 1
    for seed in range(3):
        parts = split_indices(labels, groups, {"val": 0.1, "test": 0.2}, seed=seed)
        seen = [set(groups[idx].tolist()) for idx in parts.values()]
        assert all(not (a & b) for k, a in enumerate(seen) for b in seen[k + 1 :])
        assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(3000))
        totals = np.bincount(labels, minlength=8)
        for name, frac in (("val", 0.1), ("test", 0.2)):
            got = np.bincount(labels[parts[name]], minlength=8)
            assert np.all(np.abs(got - frac * totals) <= 0.03 * totals + 3), (name, got, totals)


def test_split_dataset_keeps_duplicates_together_and_writes_schema(tmp_path):
    ds, truth = make_demo(n=700, seed=1)
    ds = ds.subset(np.arange(len(ds)))
    ds.original_indices = np.arange(len(ds)) + 1000  # as if already cleaned from a larger file
    src = save_dataset(ds, tmp_path / "in.npz")
    loaded = load_dataset(src)
    result = split_dataset(loaded, tmp_path / "out", val=0.2, test=0.1, seed=0)
    parts = {name: load_dataset(tmp_path / "out" / f"{name}.npz") for name in ("train", "val", "test")}
    where = {}
    for name, part in parts.items():
        assert part.schema == "an2dl2024" and part.class_names == ds.class_names
        for o in part.original_indices.tolist():
            where[o - 1000] = name
    assert sorted(where) == list(range(len(ds)))
    for kind in ("exact", "near", "conflict", "meme"):
        for group in truth["groups"][kind]:
            assert len({where[m] for m in group}) == 1, (kind, group)
    assert result.groups_kept_together >= len(truth["groups"]["exact"]) + len(truth["groups"]["near"])
    assert 0.15 * len(ds) < len(parts["val"]) < 0.25 * len(ds)


def test_bad_fractions():
    with pytest.raises(ConfigError):
        split_indices(np.zeros(10, int), np.arange(10), {"val": 0.6, "test": 0.5})
