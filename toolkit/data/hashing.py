"""Image hashes and the near-duplicate search over them.

- Exact hash: blake2b of each image's pixel bytes.
- Perceptual hashes: pHash and dHash from the `imagehash` library itself, spread over a process pool for large sets,
  packed into uint64.
- Hamming search: all pairs within distance `t`, found by multi-index hashing (split the 64 bits into t+1 blocks;
  two hashes within t bits agree exactly on at least one block, so only hashes sharing a block value are compared).
  Exact, vectorised (XOR + popcount), memory O(N + pairs); never an N x N matrix.
- Connected components with a vectorised union-find.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from itertools import combinations
from math import comb
from concurrent.futures import ProcessPoolExecutor

import numpy as np

PARALLEL_MIN = 4000  # below this, a process pool costs more than it saves
_SHARED: np.ndarray | None = None  # images visible to forked workers without pickling them


def exact_hashes(images: np.ndarray) -> np.ndarray:
    """blake2b (16 bytes) of each image's shape and pixel bytes, as an array of 16-byte values."""
    out = np.empty(len(images), dtype="S16")
    for i, img in enumerate(images):
        out[i] = hashlib.blake2b(np.ascontiguousarray(img).data, digest_size=16).digest()
    return out


def exact_groups(digests: np.ndarray) -> np.ndarray:
    """Group id per image: images with the same exact hash share the id (the lowest index in the group)."""
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def perceptual_hashes(images: np.ndarray, workers: int | None = None, chunk: int = 1000,
                      progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """pHash and dHash (imagehash, 64 bits each) of every image, packed as uint64 arrays.

    `progress(k, n)` is called with k=0 before the work starts, then as each chunk of k of the n images is done.
    """
    n = len(images)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    if progress is not None:
        progress(0, n)
    if n < PARALLEL_MIN or workers <= 1:
        return _collect((_hash_range(images, s, e) for s, e in bounds), bounds, n, progress)
    global _SHARED
    ctx = _fork_context()
    _SHARED = images if ctx is not None else None
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            if ctx is not None:  # forked workers read the parent's array: nothing is pickled but the indices
                results = pool.map(_hash_shared, bounds)
            else:
                results = pool.map(_hash_range, [images[s:e] for s, e in bounds], [0] * len(bounds), [e - s for s, e in bounds])
            return _collect(results, bounds, n, progress)
    finally:
        _SHARED = None


def _collect(results, bounds: list[tuple[int, int]], n: int, progress) -> tuple[np.ndarray, np.ndarray]:
    """Join per-chunk (pHash, dHash) results, which arrive in order, reporting each chunk as it comes."""
    parts = []
    for (s, e), part in zip(bounds, results):
        parts.append(part)
        if progress is not None:
            progress(e - s, n)
    if not parts:
        return np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    return np.concatenate([p for p, _ in parts]), np.concatenate([d for _, d in parts])


def _fork_context():
    import multiprocessing as mp

    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


def _hash_shared(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _hash_range(_SHARED, *bounds)


def _hash_range(images: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    import imagehash
    from PIL import Image

    ph = np.empty(stop - start, dtype=np.uint64)
    dh = np.empty(stop - start, dtype=np.uint64)
    for k, i in enumerate(range(start, stop)):
        pil = Image.fromarray(images[i]).convert("L")  # both hashes convert to L first; doing it once halves the cost
        ph[k] = pack_bits(imagehash.phash(pil).hash)
        dh[k] = pack_bits(imagehash.dhash(pil).hash)
    return ph, dh


def pack_bits(bits: np.ndarray) -> np.uint64:
    """An imagehash bool matrix (8x8) as one uint64, first bit most significant."""
    return np.packbits(np.asarray(bits, dtype=bool).reshape(-1)).view(">u8")[0].astype(np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with Hamming distance <= max_distance: arrays i, j, distance. Identical hashes included."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be 0-63, got {max_distance}")
    count, radius = _plan(len(hashes), max_distance)
    blocks = _blocks(count)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for block in range(count):
        if radius == 0:
            pairs = _same_key_pairs(hashes, blocks[block], max_distance, chunk)
        else:
            pairs = _probe_pairs(hashes, blocks[block], radius, max_distance, chunk)
        for a, b, d in pairs:
            keep = _first_block(hashes[a], hashes[b], block, blocks, radius)
            found.append((np.minimum(a, b)[keep], np.maximum(a, b)[keep], d[keep].astype(np.int64)))
    if not found:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    i, j, d = (np.concatenate(x).astype(np.int64) for x in zip(*found))
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def _plan(n: int, t: int) -> tuple[int, int]:
    """Blocks and per-block radius: two hashes within t bits are within t // count bits on some block (pigeonhole).
    Radius 0 compares hashes sharing a block value; radius r > 0 probes every value within r bits of each key
    in a table of 2^width buckets. Pick the cheapest by a cost model: probes x (N + expected bucket hits)."""
    best = (float("inf"), t + 1, 0)
    for count in range(1, t + 2):
        radius = t // count
        if radius and 64 // count > 22:  # bucket table of 2^width entries: keep it small
            continue
        cost = 0.0
        for _, width in _blocks(count):
            probes = sum(comb(width, k) for k in range(radius + 1))
            cost += (probes * (n + n * n / 2**width)) if radius else n * n / 2**width / 2 + n
        best = min(best, (cost, count, radius))
    return best[1], best[2]


def _same_key_pairs(hashes, block, max_distance, chunk):
    """Pairs sharing the block's key, compared offset by offset in key order: work ~ the number of same-key pairs."""
    shift, width = block
    keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
    order = np.argsort(keys, kind="stable")
    sorted_keys, sorted_hashes = keys[order], hashes[order]
    # rem[p] = how many later sorted positions share p's key; offset k pairs p with p+k while rem[p] >= k
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    rem = np.repeat(ends, ends - starts) - np.arange(len(order)) - 1
    active = np.flatnonzero(rem >= 1)
    offset = 1
    while active.size:
        for s in range(0, active.size, chunk):
            p = active[s : s + chunk]
            d = popcount(sorted_hashes[p] ^ sorted_hashes[p + offset])
            close = np.flatnonzero(d <= max_distance)
            yield order[p[close]], order[p[close] + offset], d[close]
        offset += 1
        active = active[rem[active] >= offset]


def _probe_pairs(hashes, block, radius, max_distance, chunk):
    """Pairs whose block keys lie within `radius` bits: each key probes every key at that distance in a bucket table."""
    shift, width = block
    keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=1 << width)
    starts = np.cumsum(counts) - counts
    n = len(hashes)
    for mask in _masks(width, radius):
        probe = keys ^ mask
        hits = counts[probe]
        ends = np.cumsum(hits)
        # sources in slices whose expansion stays under `chunk` candidate pairs (memory O(chunk), not O(N^2))
        lo = 0
        while lo < n:
            base = ends[lo - 1] if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, base + chunk, side="right")))
            src = np.repeat(np.arange(lo, hi), hits[lo:hi])
            within = np.arange(len(src)) - np.repeat(ends[lo:hi] - hits[lo:hi] - base, hits[lo:hi])
            dst = order[np.repeat(starts[probe[lo:hi]], hits[lo:hi]) + within]
            lo = hi
            keep = src < dst
            src, dst = src[keep], dst[keep]
            d = popcount(hashes[src] ^ hashes[dst])
            close = np.flatnonzero(d <= max_distance)
            yield src[close], dst[close], d[close]


def _masks(width: int, radius: int) -> list[int]:
    return [sum(1 << b for b in bits) for k in range(radius + 1) for bits in combinations(range(width), k)]


def _blocks(count: int) -> list[tuple[int, int]]:
    """Split 64 bits into `count` contiguous blocks: (shift, width) each."""
    widths = [64 // count + (1 if k < 64 % count else 0) for k in range(count)]
    shifts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(shifts, widths))


def _first_block(a: np.ndarray, b: np.ndarray, block: int, blocks: list, radius: int) -> np.ndarray:
    """True where `block` is the first block on which a and b are within `radius` bits (each pair reported once)."""
    first = np.ones(a.shape, dtype=bool)
    for shift, width in blocks[:block]:
        mask = np.uint64((1 << width) - 1)
        first &= popcount(((a ^ b) >> np.uint64(shift)) & mask) > radius
    return first


def hamming_pairs_bruteforce(hashes: np.ndarray, max_distance: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference search: every pair, compared in row chunks (memory O(chunk x N)). Same output as `hamming_pairs`."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    out_i, out_j, out_d = [], [], []
    for s in range(0, len(hashes), chunk):
        d = popcount(hashes[s : s + chunk, None] ^ hashes[None, :])
        rows, cols = np.nonzero(d <= max_distance)
        rows = rows + s
        keep = rows < cols
        out_i.append(rows[keep])
        out_j.append(cols[keep])
        out_d.append(d[rows[keep] - s, cols[keep]].astype(np.int64))
    i, j, d = (np.concatenate(x).astype(np.int64) if x else np.empty(0, np.int64) for x in (out_i, out_j, out_d))
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label per node (the smallest node index in its component), for an undirected edge list."""
    parent = np.arange(n, dtype=np.int64)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    while True:  # vectorised label propagation: hook every edge onto its smaller root, then compress paths
        ri, rj = _find(parent, i), _find(parent, j)
        differ = ri != rj
        if not differ.any():
            break
        lo, hi = np.minimum(ri[differ], rj[differ]), np.maximum(ri[differ], rj[differ])
        np.minimum.at(parent, hi, lo)
    return _find(parent, np.arange(n))


def _find(parent: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent[:] = nxt
    return parent[nodes]
