"""toolkit.data.hashing: imagehash-based hashes, the multi-index Hamming search against brute force, components."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from toolkit.data import hashing


def _random_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes with planted near copies (1-6 bit flips) and identical copies."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    k = n // 4
    near = h[:k].copy()
    for _ in range(6):
        bit = rng.integers(0, 64, k).astype(np.uint64)
        near ^= np.where(rng.random(k) < 0.6, np.uint64(1) << bit, np.uint64(0))
    h[k : 2 * k] = near
    h[-5:] = h[1]
    return h


@pytest.mark.parametrize("n,t,seed", [(1500, 0, 0), (1500, 2, 1), (2000, 8, 2), (600, 15, 3), (300, 40, 4)])
def test_hamming_search_equals_brute_force(n, t, seed):
    h = _random_hashes(n, seed)
    fast = hashing.hamming_pairs(h, t)
    slow = hashing.hamming_pairs_bruteforce(h, t)
    assert len(slow[0]) > 0
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)


def test_hamming_search_on_skewed_buckets():
    # many hashes share most bits (like smooth images): big buckets must still give exactly the brute-force pairs
    rng = np.random.default_rng(5)
    h = np.uint64(0xF0F0F0F0F0F0F0F0) ^ (rng.integers(0, 2**20, 3000).astype(np.uint64) << np.uint64(rng.integers(0, 40)))
    for a, b in zip(hashing.hamming_pairs(h, 5), hashing.hamming_pairs_bruteforce(h, 5)):
        assert np.array_equal(a, b)


def test_popcount_table_matches_numpy():
    x = _random_hashes(1000, 6)
    table = hashing._BYTE_POPCOUNT[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)
    assert np.array_equal(table, [bin(int(v)).count("1") for v in x])
    assert np.array_equal(hashing.popcount(x), table)


def test_perceptual_hashes_are_imagehash_values_in_serial_and_pool():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)
    calls = []
    ph, dh = hashing.perceptual_hashes(images, workers=1, chunk=16, progress=lambda k, n: calls.append((k, n)))
    assert calls == [(0, 40), (16, 40), (16, 40), (8, 40)]  # the total first, then each chunk as it finishes
    for k in (0, 17, 39):
        pil = Image.fromarray(images[k])
        assert int(ph[k]) == int(str(imagehash.phash(pil)), 16)
        assert int(dh[k]) == int(str(imagehash.dhash(pil)), 16)
    old = hashing.PARALLEL_MIN
    hashing.PARALLEL_MIN = 10
    try:
        calls = []
        ph2, dh2 = hashing.perceptual_hashes(images, workers=2, chunk=7, progress=lambda k, n: calls.append((k, n)))
    finally:
        hashing.PARALLEL_MIN = old
    assert np.array_equal(ph, ph2) and np.array_equal(dh, dh2)
    assert calls[0] == (0, 40) and sum(k for k, _ in calls) == 40 and len(calls) == 1 + 6


def test_exact_groups():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    images[4] = images[1]
    images[5] = images[1]
    images[3] = images[0]
    assert hashing.exact_groups(hashing.exact_hashes(images)).tolist() == [0, 1, 2, 0, 1, 1]


def test_connected_components_chains_and_order():
    # a chain 9-7-5-3-1 linked in reverse order, a pair, and singletons
    comp = hashing.connected_components(10, np.array([9, 7, 5, 3, 0]), np.array([7, 5, 3, 1, 2]))
    assert comp.tolist() == [0, 1, 0, 1, 4, 1, 6, 1, 8, 1]
    assert hashing.connected_components(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]


def test_rejects_out_of_range_threshold():
    with pytest.raises(ValueError):
        hashing.hamming_pairs(np.zeros(3, np.uint64), 64)


@pytest.mark.parametrize("count,radius", [(9, 0), (5, 1), (4, 2), (3, 2)])
def test_every_search_plan_equals_brute_force(monkeypatch, count, radius):
    # the cost model picks a plan by size; each plan must give exactly the brute-force pairs (also in small chunks)
    monkeypatch.setattr(hashing, "_plan", lambda n, t: (count, radius))
    h = _random_hashes(1200, 7)
    for a, b in zip(hashing.hamming_pairs(h, 8, chunk=500), hashing.hamming_pairs_bruteforce(h, 8)):
        assert np.array_equal(a, b)
