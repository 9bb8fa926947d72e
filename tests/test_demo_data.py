"""toolkit.data.demo: deterministic, schema-correct, and the ground truth matches what is in the file."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.demo import make_demo
from toolkit.data.io import BLOOD_CELL_CLASSES, load_dataset, save_dataset


@pytest.fixture(scope="module")
def demo():
    return make_demo(n=800, seed=3)


def test_same_seed_same_data_other_seed_differs(demo):
    ds, truth = demo
    again, truth2 = make_demo(n=800, seed=3)
    other, _ = make_demo(n=800, seed=4)
    assert np.array_equal(ds.images, again.images) and np.array_equal(ds.labels, again.labels) and truth == truth2
    assert not np.array_equal(ds.images, other.images)


def test_schema_and_balance(demo, tmp_path):
    ds, truth = demo
    path = save_dataset(ds, tmp_path / "demo.npz", schema="an2dl2024")
    with np.load(path) as raw:
        assert raw["images"].shape == (800, 96, 96, 3) and raw["images"].dtype == np.uint8
        assert raw["labels"].shape == (800, 1)
    loaded = load_dataset(path)
    assert loaded.class_names == BLOOD_CELL_CLASSES
    genuine = np.bincount(ds.labels[truth["genuine"]], minlength=8)
    assert genuine.min() >= 0.9 * genuine.max()  # genuine images are balanced over the 8 classes


def test_planted_groups_are_what_the_truth_says(demo):
    ds, truth = demo
    g = truth["groups"]
    for a, b in g["exact"]:
        assert np.array_equal(ds.images[a], ds.images[b]) and ds.labels[a] == ds.labels[b]
    for a, b in g["near"]:
        diff = np.abs(ds.images[a].astype(int) - ds.images[b].astype(int))
        assert 0 < diff.mean() < 12 and ds.labels[a] == ds.labels[b]
    for a, b in g["conflict"]:
        assert np.array_equal(ds.images[a], ds.images[b]) and ds.labels[a] != ds.labels[b]
    assert [len(m) for m in g["meme"]] == [100, 100]
    for members in g["meme"]:
        assert len(set(ds.labels[members].tolist())) >= 5  # random labels spread over the classes
    planted = {i for kind in g.values() for grp in kind for i in grp}
    assert planted.isdisjoint(truth["genuine"]) and len(planted) + len(truth["genuine"]) == len(ds)


def test_genuine_images_are_all_distinct(demo):
    ds, truth = demo
    flat = ds.images[truth["genuine"]].reshape(len(truth["genuine"]), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)
