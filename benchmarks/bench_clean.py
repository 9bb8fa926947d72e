"""Benchmark: the whole `cbtool clean` on a 13,759-image set (the AN2DL 2024 size), wall time by stage.

The set is the demo generator at n=13,759 with the AN2DL meme pattern (1,600 + 200 copies). Stages: load, hash
(exact + pHash/dHash over a process pool), search (multi-index Hamming), confirm (pixel check + components),
decide (groups + outlier scores), save, report (JSON + contact sheets). Target: under 20 s on 2 cores.
Also prints recall on the planted problems and peak memory. Usage: python benchmarks/bench_clean.py [--n N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.data.clean import CleanConfig  # noqa: E402
from toolkit.data.demo import make_demo  # noqa: E402
from toolkit.data.io import save_dataset  # noqa: E402
from toolkit.data.clean_report import clean_file  # noqa: E402


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=13759)
    args = parser.parse_args()
    t = time.perf_counter()
    ds, truth = make_demo(n=args.n, seed=0, meme_copies=(1600, 200))
    print(f"generated {len(ds)} images in {time.perf_counter() - t:.1f} s (not part of the timing)")
    with tempfile.TemporaryDirectory() as tmp:
        src = save_dataset(ds, Path(tmp) / "train.npz")
        load_before = os.getloadavg()[0]
        cpu = _cpu_seconds()
        t = time.perf_counter()
        report, _ = clean_file(src, Path(tmp) / "clean.npz", Path(tmp) / "report", CleanConfig())
        total = time.perf_counter() - t
        cpu = _cpu_seconds() - cpu
        sheets = sorted(p.name for p in (Path(tmp) / "report").iterdir())
    print(f"cpu cores: {os.cpu_count()}")
    for stage, seconds in report.timings.items():
        print(f"  {stage:<8} {seconds:7.2f} s")
    print(f"cpu seconds used (this process + hashing workers): {cpu:.1f}; load average before the run "
          f"{load_before:.1f} on {os.cpu_count()} cores (other work on the machine stretches the wall time)")
    print(f"clean total: {total:.2f} s for {len(ds)} images (target < 20 s) -> {'OK' if total < 20 else 'OVER'}")
    print(f"candidates: {report.candidates}; removed by reason: {report.counts()}")
    gone = {r.index for r in report.removed}
    g = truth["groups"]
    near_ok = sum(sum(m in gone for m in grp) == len(grp) - 1 for grp in g["near"]) / len(g["near"])
    exact_ok = sum(sum(m in gone for m in grp) == len(grp) - 1 for grp in g["exact"]) / len(g["exact"])
    memes_ok = all(m in gone for grp in g["meme"] for m in grp)
    conflicts_ok = all(m in gone for grp in g["conflict"] for m in grp)
    genuine = sum(i in gone for i in truth["genuine"]) / len(truth["genuine"])
    print(f"planted: exact {exact_ok:.1%}, near {near_ok:.1%}, conflicts all={conflicts_ok}, memes all={memes_ok}; "
          f"genuine removed {genuine:.2%}")
    print(f"report files: {sheets}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"(includes the {ds.images.nbytes / 2**20:.0f} MiB generated set held by this script)")


if __name__ == "__main__":
    main()
