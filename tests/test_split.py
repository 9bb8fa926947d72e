"""toolkit.data.split: stratified, group-aware (train/val/test or K folds), written in the input's schema with original
indices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.data.clean import CleanConfig
from toolkit.data.demo import make_demo
from toolkit.data.io import Dataset, load_dataset, save_dataset
from toolkit.data.split import duplicate_groups, fold_dataset, fold_indices, split_dataset, split_indices
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


def _planted(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and group ids: singletons, 60 groups of 2-6 same-label copies, one group of 40, one mixed-label group."""
    rng = np.random.default_rng(seed)
    labels, groups = rng.integers(0, 5, n), np.arange(n)
    start = 0
    for size in rng.integers(2, 7, 60).tolist():
        groups[start : start + size], labels[start : start + size] = start, labels[start]
        start += size
    groups[start : start + 40], labels[start : start + 40] = start, 2
    groups[start + 40 : start + 50] = start + 40  # a mixed-label group (labels stay random)
    return labels, groups


@pytest.mark.parametrize("k", [3, 5])
def test_folds_keep_groups_whole_and_spread_each_class_within_one_image(k):
    labels, groups = _planted()
    for seed in range(3):
        fold = fold_indices(labels, groups, k, seed=seed)
        assert set(fold.tolist()) == set(range(k))
        for g in np.unique(groups):
            assert len(set(fold[groups == g].tolist())) == 1, g
        for c in range(5):
            got = np.bincount(fold[labels == c], minlength=k)
            assert got.max() - got.min() <= 1, (c, got)  # floor or ceil of the ideal n_c / k
        sizes = np.bincount(fold, minlength=k)
        assert sizes.max() - sizes.min() <= 5, sizes  # classes' remainders do not all pile onto one fold
    assert np.array_equal(fold_indices(labels, groups, k, seed=7), fold_indices(labels, groups, k, seed=7))
    assert not np.array_equal(fold_indices(labels, groups, k, seed=7), fold_indices(labels, groups, k, seed=8))


def test_fold_split_of_demo_keeps_planted_groups_in_one_fold(tmp_path):
    ds, truth = make_demo(n=700, seed=2)
    ds.original_indices = np.arange(len(ds)) + 500  # as if already cleaned from a larger file
    result = fold_dataset(ds, tmp_path / "folds", k=4, seed=1)
    record = json.loads((tmp_path / "folds" / "folds.json").read_text())
    rows = record["rows"]
    fold_of = dict(zip(rows["original_index"], rows["fold"]))
    assert sorted(fold_of) == list(range(500, 500 + len(ds))) and record["k"] == 4 and record["seed"] == 1
    for i in range(1, 5):
        train = load_dataset(tmp_path / "folds" / f"fold_{i}" / "train.npz")
        val = load_dataset(tmp_path / "folds" / f"fold_{i}" / "val.npz")
        assert {fold_of[o] for o in val.original_indices.tolist()} == {i}
        assert i not in {fold_of[o] for o in train.original_indices.tolist()}
        assert len(train) + len(val) == len(ds) and val.schema == ds.schema
        assert val.class_counts() == result.folds[i - 1]["class_counts"]
    for kind in ("exact", "near", "conflict"):
        for group in truth["groups"][kind]:
            assert len({fold_of[m + 500] for m in group}) == 1, (kind, group)
            assert len({rows["group"][m] for m in group}) == 1, (kind, group)  # recorded as one group
    for group in truth["groups"]["meme"]:  # the copies of one meme that the duplicate graph links stay in one fold
        for copies in _same_pixels(ds.images, group):
            assert len({fold_of[m + 500] for m in copies}) == 1 and len({rows["group"][m] for m in copies}) == 1
    assert result.groups_kept_together >= len(truth["groups"]["exact"]) + len(truth["groups"]["near"])


def _same_pixels(images: np.ndarray, members: list[int]) -> list[list[int]]:
    """`members` partitioned into sets of byte-identical images."""
    by_bytes: dict[bytes, list[int]] = {}
    for m in members:
        by_bytes.setdefault(images[m].tobytes(), []).append(m)
    return list(by_bytes.values())


def test_duplicate_graph_links_every_planted_meme_copy():
    # the poster's JPEG-85 copies sit at grey distance 2.01 > PIXEL_THRESHOLD: the contrast term links them
    ds, truth = make_demo(n=700, seed=2)
    groups, _ = duplicate_groups(ds)
    assert all(len(set(groups[g].tolist())) == 1 for g in truth["groups"]["meme"])
    absolute_only, _ = duplicate_groups(ds, CleanConfig(contrast_threshold=0))
    assert not all(len(set(absolute_only[g].tolist())) == 1 for g in truth["groups"]["meme"])


def test_more_folds_than_duplicate_groups_is_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    images[1], images[3] = images[0], images[2]  # two groups of exact copies
    ds = Dataset(images, np.array([0, 0, 1, 1]), ["a", "b"], np.arange(4))
    with pytest.raises(ConfigError, match="fold 3 would be empty"):
        fold_dataset(ds, tmp_path / "folds", k=3)
    assert fold_dataset(ds, tmp_path / "folds", k=2).folds[0]["val"] == 2
    with pytest.raises(ConfigError, match=">= 2"):
        fold_indices(np.zeros(4, int), np.arange(4), 1)


def test_val_zero_with_test_writes_only_train_and_test_and_both_zero_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import main

    ds, _truth = make_demo(n=300, seed=2)
    save_dataset(ds, tmp_path / "d.npz")
    runner = CliRunner()
    ok = runner.invoke(main, ["split", str(tmp_path / "d.npz"), "--val", "0", "--test", "0.2", "-o", str(tmp_path / "h")])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["test.npz", "train.npz"]
    parts = [load_dataset(tmp_path / "h" / f"{name}.npz") for name in ("train", "test")]
    assert len(parts[1]) > 0 and len(parts[0]) + len(parts[1]) == len(ds)
    none = runner.invoke(main, ["split", str(tmp_path / "d.npz"), "--val", "0", "-o", str(tmp_path / "n")])
    assert none.exit_code == 2 and "nothing to split off" in none.output and not (tmp_path / "n").exists()
