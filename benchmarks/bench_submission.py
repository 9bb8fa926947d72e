"""Submission sizes and the sandboxed child's timings for one variant, as ratios measured in the same run.

    python benchmarks/bench_submission.py [--variant convnext_tiny] [--profile an2dl-2024] [--images 64]

Builds a run dir with random weights (sizes and speed do not depend on training), exports it, builds zips
(portable fp32, portable fp16, d4 TTA), runs each through the sandbox, and prints zip MiB, import/load/predict
seconds, images/s, the peak resident memory of the child, and the ratios fp16/fp32 and d4/none.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="convnext_tiny")
    parser.add_argument("--profile", default="an2dl-2024")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()

    from export_data import make_run_dir

    from toolkit.export import export_run
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import run_submission
    from toolkit.submission.build import BuildOptions, build_submission

    profile = get_profile(args.profile)
    images = np.random.default_rng(0).integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        run = make_run_dir(tmp / "run", variant=args.variant, n_probe=4)
        export_run(run, tmp / "export", ["portable"])
        print(f"run + export of {args.variant}: {time.perf_counter() - started:.1f} s")
        rows = {}
        for label, options in {"fp32": BuildOptions(), "fp16": BuildOptions(fp16=True), "d4": BuildOptions(tta="d4")}.items():
            t0 = time.perf_counter()
            built = build_submission(tmp / "export", tmp / f"{label}.zip", profile, options)
            build_s = time.perf_counter() - t0
            outcome = run_submission(tmp / f"{label}.zip", profile, {"x": images})
            if outcome.failure:
                raise SystemExit(f"{label}: {outcome.failure}")
            predict = outcome.timing["predict_s"]["x"]
            rows[label] = {"zip_mib": built.bytes / 2**20, "build_s": build_s, "import_s": outcome.timing["import_s"],
                           "load_s": outcome.timing["load_s"], "predict_s": predict, "img_per_s": args.images / predict,
                           "peak_mb": outcome.peak_memory_mb, "wall_s": outcome.wall_s}
    print(f"{'':6} {'zip MiB':>8} {'build s':>8} {'import s':>9} {'load s':>7} {'predict s':>10} {'img/s':>7} {'peak MB':>8} {'child wall s':>12}")
    for label, r in rows.items():
        print(f"{label:6} {r['zip_mib']:8.2f} {r['build_s']:8.2f} {r['import_s']:9.2f} {r['load_s']:7.2f} {r['predict_s']:10.2f} "
              f"{r['img_per_s']:7.1f} {r['peak_mb']:8.0f} {r['wall_s']:12.2f}")
    print(f"ratios: zip fp16/fp32 {rows['fp16']['zip_mib'] / rows['fp32']['zip_mib']:.2f}, "
          f"predict d4/none {rows['d4']['predict_s'] / rows['fp32']['predict_s']:.2f}, "
          f"peak memory d4/none {rows['d4']['peak_mb'] / rows['fp32']['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
