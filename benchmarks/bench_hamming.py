"""Benchmark: the near-duplicate Hamming search over 200,000 64-bit hashes, against a naive pairwise Python loop.

The hashes are random with planted near copies (1-6 bit flips) and identical copies, like a large training set's
pHashes. The fast search (multi-index blocks + vectorised XOR/popcount) runs on all of them; the naive loop (every
pair, `bin(a ^ b).count("1")`) runs on a subsample in the same process, and its rate gives the projected time for
the whole set. Target: under 30 s for the 200k search. Prints peak memory (tracemalloc for the search itself).
Usage: python benchmarks/bench_hamming.py [--n N] [--threshold T] [--naive-n M]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.data.clean import PHASH_THRESHOLD  # noqa: E402
from toolkit.data.hashing import hamming_pairs  # noqa: E402


def make_hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    k = n // 20  # 5% near copies, 1% identical copies
    near = h[:k].copy()
    for _ in range(6):
        bit = rng.integers(0, 64, k).astype(np.uint64)
        near ^= np.where(rng.random(k) < 0.5, np.uint64(1) << bit, np.uint64(0))
    h[k : 2 * k] = near
    h[2 * k : 2 * k + n // 100] = h[: n // 100]
    return h


def naive(hashes: list[int], t: int) -> list[tuple[int, int, int]]:
    out = []
    for i in range(len(hashes)):
        a = hashes[i]
        for j in range(i + 1, len(hashes)):
            d = bin(a ^ hashes[j]).count("1")
            if d <= t:
                out.append((i, j, d))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--threshold", type=int, default=PHASH_THRESHOLD)
    parser.add_argument("--naive-n", type=int, default=3000)
    args = parser.parse_args()
    hashes = make_hashes(args.n)
    tracemalloc.start()
    t = time.perf_counter()
    i, j, d = hamming_pairs(hashes, args.threshold)
    fast = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"fast search: {args.n} hashes, threshold {args.threshold}: {len(i)} pairs in {fast:.2f} s "
          f"(target < 30 s) -> {'OK' if fast < 30 else 'OVER'}; traced peak {peak / 2**20:.1f} MiB "
          f"(an N x N distance matrix would be {args.n**2 / 2**30:.0f} GiB even at 1 byte per pair)")

    half, k = args.naive_n // 2, args.n // 20
    sub = np.concatenate([hashes[:half], hashes[k : k + args.naive_n - half]])  # originals + their near copies
    t = time.perf_counter()
    slow_pairs = naive([int(x) for x in sub], args.threshold)
    slow = time.perf_counter() - t
    t = time.perf_counter()
    fi, fj, fd = hamming_pairs(sub, args.threshold)
    fast_sub = time.perf_counter() - t
    assert sorted(slow_pairs) == list(zip(fi.tolist(), fj.tolist(), fd.tolist())), "fast search disagrees with the naive loop"
    pairs_sub, pairs_all = args.naive_n * (args.naive_n - 1) / 2, args.n * (args.n - 1) / 2
    projected = slow * pairs_all / pairs_sub
    print(f"naive loop on a {args.naive_n}-hash subsample: {slow:.2f} s ({pairs_sub / slow / 1e6:.2f} M pairs/s), "
          f"same pairs as the fast search ({len(slow_pairs)}); fast search on that subsample {fast_sub:.4f} s "
          f"(ratio {slow / max(fast_sub, 1e-9):.0f}x)")
    print(f"naive loop projected to {args.n} hashes: {projected / 3600:.1f} h -> fast search is {projected / fast:.0f}x faster")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
