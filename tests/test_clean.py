"""toolkit.data.clean on the demo data: every planted problem found, genuine images left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.data.clean import CleanConfig, colour_thumbnails, contrast, find_problems, grey_thumbnails, outlier_scores
from toolkit.data.demo import make_demo
from toolkit.errors import ConfigError


@pytest.fixture(scope="module")
def demo():
    return make_demo(n=2400, seed=0)


@pytest.fixture(scope="module")
def report(demo):
    return find_problems(demo[0], CleanConfig(workers=1))


def _removed(report):
    return {r.index: r for r in report.removed}


def test_planted_problems_removed_and_genuine_kept(demo, report):
    ds, truth = demo
    gone, g = _removed(report), truth["groups"]
    for group in g["exact"]:  # one copy of each exact group stays, the other goes
        assert sum(m in gone for m in group) == len(group) - 1
        assert all(gone[m].reason == "exact_duplicate" for m in group if m in gone)
    near_ok = sum(sum(m in gone for m in group) == len(group) - 1 for group in g["near"])
    assert near_ok >= 0.95 * len(g["near"])
    conflicting = [m for group in g["conflict"] for m in group]
    assert all(m in gone and gone[m].reason == "conflicting_labels" for m in conflicting)
    memes = [m for group in g["meme"] for m in group]
    assert all(m in gone and gone[m].reason == "outlier_cluster" for m in memes)
    genuine_removed = sum(i in gone for i in truth["genuine"])
    assert genuine_removed <= 0.005 * len(truth["genuine"])
    assert len(report.kept) + len(report.removed) == len(ds)


def test_near_duplicates_report_both_distances_within_thresholds(demo, report):
    near = [r for r in report.removed if r.reason == "near_duplicate"]
    assert near
    config = CleanConfig()
    kept = {g.id: g.kept for g in report.groups}
    spread = contrast(grey_thumbnails(colour_thumbnails(demo[0].images)))
    for r in near:
        lower = min(spread[r.index], spread[kept[r.group]])
        assert r.pixel_distance <= max(config.pixel_threshold, config.contrast_threshold * lower) + 1e-3
        assert r.phash_distance <= config.phash_threshold or r.dhash_distance <= config.dhash_threshold
    # the hash search alone proposes far more pairs than survive the pixel check (smooth images collide)
    assert report.candidates["rejected_by_pixels"] > 10 * report.candidates["confirmed"]


def test_no_false_merges_every_group_is_one_planted_group(demo, report):
    ds, truth = demo
    planted = {m: (kind, k) for kind, gs in truth["groups"].items() for k, g in enumerate(gs) for m in g}
    assert report.groups
    for group in report.groups:  # smooth distinct cells are never linked, whatever the contrast term allows
        assert len({planted.get(m, ("genuine", m)) for m in group.members}) == 1, group


def test_pixel_check_is_what_keeps_genuine_images(demo):
    ds, truth = demo
    loose = find_problems(ds.subset(np.arange(600)), CleanConfig(pixel_threshold=255.0, workers=1))
    strict = find_problems(ds.subset(np.arange(600)), CleanConfig(workers=1))
    assert len(loose.removed) > len(strict.removed) + 50  # hash matches alone would wipe out distinct images


def test_keep_majority_keeps_one_copy_with_the_majority_label(demo):
    ds, truth = demo
    a, b = truth["groups"]["conflict"][0]
    rows = np.array([a, a, b] + truth["genuine"][:20])  # a twice (majority label), its conflicting copy once
    sub = ds.subset(rows)
    drop = find_problems(sub, CleanConfig(workers=1))
    keep = find_problems(sub, CleanConfig(conflicts="keep-majority", workers=1))
    assert {r.index for r in drop.removed} == {0, 1, 2}
    assert {r.index for r in keep.removed} == {1, 2} and 0 in keep.kept
    assert {r.reason for r in keep.removed} == {"conflicting_labels"}


def test_memes_rank_as_unlike_the_rest_and_drop_outliers(demo):
    ds, truth = demo
    scores = outlier_scores(colour_thumbnails(ds.images), ds.labels)
    memes = [m for group in truth["groups"]["meme"] for m in group]
    assert np.median(scores[memes]) > np.percentile(scores[truth["genuine"]], 99)
    sub = ds.subset(np.array(truth["genuine"][:300] + memes[:1]))
    rep = find_problems(sub, CleanConfig(drop_outliers=1, workers=1))
    assert [(r.index, r.reason) for r in rep.removed] == [(300, "outlier")]
    assert rep.outliers[0]["index"] == 300 and rep.outliers[0]["removed"]


def test_report_serialises_to_json(report):
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["n_removed"] == len(payload["removed"]) == sum(payload["removed_by_reason"].values())
    assert {"index", "reason", "group", "phash_distance", "dhash_distance", "pixel_distance"} <= set(payload["removed"][0])
    assert len(payload["outliers"]) == 50


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="conflicts"):
        CleanConfig(conflicts="vote")
    with pytest.raises(ConfigError, match="phash_threshold"):
        CleanConfig(phash_threshold=64)
    with pytest.raises(ConfigError, match="contrast_threshold"):
        CleanConfig(contrast_threshold=-0.1)
