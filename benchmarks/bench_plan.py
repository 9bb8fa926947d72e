"""The time planner (`build-submission --plan N`) against the grader time `simulate` measures.

    python benchmarks/bench_plan.py [--members DIR [DIR ...]] [--variant convnext_tiny] [--images 400] [--tta d4]
                                    [--profile an2dl-2024] [--batch-size 64] [--repeats 1] [--host]

Members are run or export dirs (--members); without them one run dir with random weights of --variant is made
(speed does not depend on weight values). Each member gets --tta. Steps, all on this machine:
1. plan: `toolkit.submission.plan.plan_submission` for --images images with an empty cache (it benchmarks each
   member's network in the profile's pinned runtime), then again from the cache (must measure nothing).
2. build the submission (several dirs: one ensemble zip, as `build-submission SRC SRC ...`) and run `simulate` on
   --images demo images (toolkit.data.demo), --repeats times.
3. compare the plan's total (import + load + first call + N x s/image) with simulate's `grader_pass_s` (import +
   load + the grader's own predict pass), and the per-image costs: ratio plan/measured, PASS when within 20%.
--host also plans in this interpreter (TF of the host), to show why the planner times in the pinned runtime.

Measured 2026-11-30 on the shared 2-core dev box while three other agents trained and tested (load average 4-8,
so absolute times swing up to 3x within minutes; each pair is planned and simulated back to back and the verdict
is the median of the pair ratios), an2dl-2024 runtime (TF 2.17 / Keras 3.4.1), host TF 2.21 / Keras 3.15.1, one
member with d4 TTA (8 views), batch 64. Target: plan / simulate's grader_pass_s within 20%.
  convnext_test, 400 demo images, 5 pairs: plan 12.7-43.3 s vs simulate 18.6-43.4 s; pair ratios 0.97, 1.05,
    1.29, 1.00, 0.43 -> median 1.00 (PASS); per image 1.11x, fixed costs (import + load + first call) 0.96x.
  convnext_test, 400 images, 3 pairs (another run): pair ratios 1.27, 0.68, 0.72 -> median 0.72 (MISS).
  convnext_tiny, 120 images, 3 pairs: plan 105-175 s vs simulate 131-154 s; pair ratios 0.71, 1.19, 0.80 ->
    median 0.80 (PASS, at the edge); per image 0.74x, fixed 0.84x.
  A fresh plan costs one runtime start + TF import + ~3 s per member network (12-15 s for convnext_test, 50-70 s
  for convnext_tiny under that load); a cached plan 0.002-0.016 s.
  Host interpreter vs the pinned runtime, same pairs: the host's TF 2.21 timed the same networks 1.2-1.8x slower
  per image than TF 2.17 (convnext_test: host/simulate 1.30 and 1.03 where the runtime's plan gave 0.73 and 0.79;
  convnext_tiny: 0.88 vs 0.56), so the planner times in the profile's runtime, as simulate runs.
On this box the noise of the machine, not the model of the cost, decides PASS/MISS: rerun on an idle machine.
3-member ensemble (issue 10's row), measured 2026-11-30 01:35-01:45 while the test suite ran beside it: the three
trained demo runs of the README's recipe (convnext_test, efficientnetv2_test, convnext_test; 96 px; d4 each),
`--members run1 run2 run3 --images 300 --repeats 3`: plan 30.5 s vs simulate's grader pass 30.5 s (medians); pair
ratios 0.909, 0.86, 1.284 -> median 0.909 (PASS, target within 20%); per image 0.971x, fixed costs 1.435x (the
plan's import + 3 loads 6.9 s); a cached plan 0.004 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET = 0.20  # |plan / measured - 1| at most this

from bench_simulate import random_run  # noqa: E402 - the one random-weights run dir of the benchmarks


def _build(sources: list[Path], output: Path, profile, tta: str, batch_size: int) -> Path:
    from toolkit.submission.build import BuildOptions, build_ensemble, build_submission

    options = BuildOptions(tta=tta, batch_size=batch_size)
    result = (build_submission(sources[0], output, profile, options) if len(sources) == 1 else
              build_ensemble(sources, output, profile, options))  # build-submission SRC SRC ...: one ensemble zip
    if not result.check.ok:
        raise SystemExit(f"the built submission fails check: {[i.message for i in result.check.issues]}")
    return output


def _heldout(path: Path, n: int):
    """The first `n` demo images (toolkit.data.demo) as a held-out npz; returns its class names."""
    import numpy as np

    from toolkit.data.demo import make_demo

    demo, _truth = make_demo(max(n, 400) + 300)
    np.savez(path, images=demo.images[:n], labels=demo.labels[:n].astype(np.int64))
    return list(demo.class_names)


def _plan(members, n: int, profile, batch_size: int, python: str | None):
    from toolkit.submission.plan import plan_submission

    with tempfile.TemporaryDirectory(prefix="bench-plan-cache-") as cache:
        started = time.perf_counter()
        fresh = plan_submission(members, n, profile, batch_size, cache_dir=Path(cache), python=python)
        fresh_s = time.perf_counter() - started
        started = time.perf_counter()
        again = plan_submission(members, n, profile, batch_size, cache_dir=Path(cache), python=python)
        cached_s = time.perf_counter() - started
    if again.measured:
        raise SystemExit("the second plan measured again: the cache did not hold")
    return fresh, fresh_s, cached_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", type=Path, default=None, help="run or export dirs (default: one random run)")
    parser.add_argument("--variant", default="convnext_test")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--tta", default="d4")
    parser.add_argument("--profile", default="an2dl-2024")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved (fresh plan, simulate) pairs")
    parser.add_argument("--host", action="store_true", help="also plan in this interpreter each repeat")
    args = parser.parse_args()

    from toolkit.runtime.profiles import get_profile
    from toolkit.submission.plan import describe, member_from_dir

    profile = get_profile(args.profile)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        work = Path(tmp)
        classes = _heldout(work / "heldout.npz", args.images)
        dirs = args.members or [random_run(work / "run", args.variant, classes)]
        members = [member_from_dir(d, args.tta, "portable") for d in dirs]
        zip_path = _build(dirs, work / "submission.zip", profile, args.tta, args.batch_size)
        pairs = [_pair(members, args, profile, zip_path, work / "heldout.npz") for _ in range(args.repeats)]
    print(describe(pairs[-1]["plan"]), file=sys.stderr)
    report = _report(pairs, args, dirs, profile)
    print(json.dumps(report, indent=2))
    print(f"\nplan {report['plan_total_s']:.1f} s vs simulate's grader pass {report['simulate_grader_pass_s']:.1f} s "
          f"(medians of {args.repeats} interleaved pairs): median pair ratio {report['ratio_total']:.3f} "
          f"({'PASS' if report['pass'] else 'MISS'}, target within {TARGET:.0%}); per image {report['ratio_per_image']:.3f}, "
          f"fixed {report['ratio_fixed']:.3f}; pairs {[round(r, 3) for r in report['pair_ratios']]}; a cached plan took "
          f"{report['cached_plan_s']:.3f} s", file=sys.stderr)
    if args.host:
        print(f"host interpreter plan / simulate: {report['host_ratio_total']:.3f} (per image {report['host_ratio_per_image']:.3f}; "
              f"host {report['host_versions']})", file=sys.stderr)


def _pair(members, args, profile, zip_path: Path, data: Path) -> dict:
    """One fresh plan (empty cache: it benchmarks) and, right after, one simulate run."""
    from toolkit.runtime.simulate import simulate

    plan, fresh_s, cached_s = _plan(members, args.images, profile, args.batch_size, None)
    host = _plan(members, args.images, profile, args.batch_size, sys.executable)[0] if args.host else None
    result = simulate(zip_path, data, profile)
    if not result.ok:
        raise SystemExit(f"simulate failed: {result.failure}")
    fixed = sum(result.timing.get(k) or 0.0 for k in ("import_s", "load_s", "fit_s"))
    return {"plan": plan, "host": host, "fresh_s": fresh_s, "cached_s": cached_s, "sim": result, "sim_fixed": fixed}


def _report(pairs: list[dict], args, dirs, profile) -> dict:
    med = statistics.median
    plan_total, sim_total = med(p["plan"].total_s for p in pairs), med(p["sim"].timing["grader_pass_s"] for p in pairs)
    plan_img, sim_img = med(p["plan"].s_per_image for p in pairs), med(p["sim"].predict_s_per_image for p in pairs)
    plan_fixed, sim_fixed = med(p["plan"].fixed_s for p in pairs), med(p["sim_fixed"] for p in pairs)
    pair_ratios = [p["plan"].total_s / p["sim"].timing["grader_pass_s"] for p in pairs]
    ratio = med(pair_ratios)  # each pair planned and simulated back to back, under the same load
    out = {
        "profile": profile.name, "members": [str(d) for d in dirs] if args.members else [f"random {args.variant}"],
        "tta": args.tta, "images": args.images, "batch_size": args.batch_size, "repeats": len(pairs),
        "plan_total_s": plan_total, "simulate_grader_pass_s": sim_total, "ratio_total": ratio,
        "ratio_of_medians": plan_total / sim_total,
        "plan_s_per_image": plan_img, "simulate_predict_s_per_image": sim_img, "ratio_per_image": plan_img / sim_img,
        "plan_fixed_s": plan_fixed, "simulate_fixed_s": sim_fixed, "ratio_fixed": plan_fixed / sim_fixed,
        "pair_ratios": pair_ratios,
        "pairs": [{"plan_total_s": p["plan"].total_s, "plan_fixed_s": p["plan"].fixed_s, "plan_s_per_image": p["plan"].s_per_image,
                   "plan_benchmark_s": p["fresh_s"], "sim_grader_pass_s": p["sim"].timing["grader_pass_s"],
                   "sim_fixed_s": p["sim_fixed"], "sim_s_per_image": p["sim"].predict_s_per_image,
                   "sim_images_within_time_limit": p["sim"].images_within_time_limit} for p in pairs],
        "cached_plan_s": max(p["cached_s"] for p in pairs),
        "runtime": pairs[-1]["plan"].runtime,
        "target": f"within {TARGET:.0%}", "pass": abs(ratio - 1) <= TARGET,
    }
    if args.host:
        host_total, host_img = med(p["host"].total_s for p in pairs), med(p["host"].s_per_image for p in pairs)
        out.update(host_ratio_total=host_total / sim_total, host_ratio_per_image=host_img / sim_img,
                   host_versions=pairs[-1]["host"].runtime.get("versions"))
    return out


if __name__ == "__main__":
    main()
