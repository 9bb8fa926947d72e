"""What `cbtool simulate` costs over running the submission bare, and what the corruption suite costs.

    python benchmarks/bench_simulate.py [--variant convnext_tiny] [--images 512] [--shift-images 64]
                                        [--profile an2dl-2024] [--repeats 2]

One submission is built (random weights, the portable format, the given profile) and timed three ways, each in
the profile's runtime interpreter, alternating, best of --repeats:
- bare:      a plain `python` process that imports model.py from the extracted zip, builds Model() and calls
             predict on exactly the inputs simulate feeds (the held-out set as uint8 and float32 for 2024, one
             image, an odd batch). Process start to exit.
- simulate:  `toolkit.runtime.simulate.simulate(...)` from call to result: load the npz, write the inputs, the
             sandboxed child (import, load, predict), output checks, scores.
- shift:     the same with --shift on --shift-images images: 11 corruptions x 5 severities.
Reported: simulate/bare (target <= 1.2), the suite's cost per 1,000 held-out images (making the corrupted sets in
the parent, and the whole extra wall time), peak memory of the child and of the bare process.

Measured 2026-11-22 on the shared 2-core dev box (load average 3.5-7, so absolute times are stretched; ratios are
best-of-N of interleaved runs), an2dl-2024 runtime (TF 2.17 / Keras 3.4.1), convnext_tiny:
  128 images x4: simulate/bare 1.054; 256 x3: 1.078; 512 x2 (load ~7): 1.222. convnext_test, 256 x1: 1.030.
  Peak RSS: child 1.94 GB, bare 1.94 GB. Corrupting: 9-13 s per 1,000 held-out images (all 55 sets);
  predicting them costs 55x the clean prediction (at the ~80 img/s of an idle 2-core machine, ~11 min per 1,000).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET = 1.2

BARE = r"""
import importlib.util, sys, time, numpy as np
sub, data, dtypes, odd = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
sys.path.insert(0, sub)
spec = importlib.util.spec_from_file_location("model", sub + "/model.py")
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
m = module.Model()
x = np.load(data)["images"]
for d in dtypes:
    m.predict(x.astype(d))
m.predict(x[:1].astype(dtypes[0]))
if odd > 1:
    m.predict(x[:odd].astype(dtypes[0]))
"""


def random_run(run: Path, variant: str, class_names: list[str]) -> Path:
    """A run dir of `variant` with random weights (what export and build-submission need; speed does not depend on
    the values). Also used by bench_plan.py."""
    import numpy as np

    from toolkit.families import build_model
    from toolkit.fsutil import write_json
    from toolkit.preprocessing import preprocess
    from toolkit.provenance import preprocessing_sha256
    from toolkit.train.models import model_spec

    spec = model_spec(variant, len(class_names), class_names)
    model = build_model(spec)
    run.mkdir(parents=True)
    model.save_weights(str(run / "best.weights.h5"))
    write_json(run / "model_spec.json", spec)
    write_json(run / "classes.json", {"class_names": class_names})
    write_json(run / "preprocessing.json", {"input_size": 96, "resize": "bilinear", "source_sha256": preprocessing_sha256()})
    images = np.random.default_rng(0).integers(0, 256, (8, 96, 96, 3), dtype=np.uint8)
    probs = np.asarray(model.predict(preprocess(images, 96), verbose=0), dtype=np.float32)
    np.savez(run / "probe.npz", images=images, labels=np.arange(8) % len(class_names), probs=probs)
    return run


def _build(work: Path, variant: str, profile) -> Path:
    """A run dir with random weights for `variant`, built into a submission for `profile`."""
    from toolkit.submission.build import build_submission

    run = random_run(work / "run", variant, [f"c{i}" for i in range(8)])
    build_submission(run, work / "submission.zip", profile)
    return work / "submission.zip"


def _bare(python: str, zip_path: Path, data: Path, dtypes: list[str], odd: int, work: Path) -> tuple[float, float]:
    sub = work / "bare_submission"
    if not sub.exists():
        zipfile.ZipFile(zip_path).extractall(sub)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([python, "-c", BARE, str(sub), str(data), ",".join(dtypes), str(odd)], check=True, cwd=sub,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True)  # fmt: skip
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, (peak / 1024 if peak > before else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="convnext_tiny")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--shift-images", type=int, default=64)
    parser.add_argument("--profile", default="an2dl-2024")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python
    from toolkit.runtime.simulate import SimulateOptions, simulate

    profile = get_profile(args.profile)
    python = runtime_python(profile, log=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        work = Path(tmp)
        zip_path = _build(work, args.variant, profile)
        rng = np.random.default_rng(1)
        data = work / "heldout.npz"
        np.savez(data, images=rng.integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8), labels=rng.integers(0, 8, args.images))
        dtypes = list(profile.contract.dtypes)
        odd = min(args.images if args.images % 2 else args.images - 1, 7)
        bare, sim, child_peak, bare_peak = [], [], 0.0, 0.0
        for _ in range(args.repeats):
            wall, peak = _bare(python, zip_path, data, dtypes, odd, work)
            bare.append(wall)
            bare_peak = max(bare_peak, peak)
            started = time.perf_counter()
            result = simulate(zip_path, data, profile, SimulateOptions())
            sim.append(time.perf_counter() - started)
            if result["status"] != "ok":
                raise SystemExit(f"simulate failed: {result['failure']}")
            child_peak = max(child_peak, result["peak_memory_mb"] or 0.0)
        started = time.perf_counter()
        shifted = simulate(zip_path, data, profile, SimulateOptions(shift=True, shift_images=args.shift_images))
        shift_wall = time.perf_counter() - started
    ratio = min(sim) / min(bare)
    per_1000 = 1000.0 / args.shift_images
    report = {
        "profile": profile.name,
        "variant": args.variant,
        "images": args.images,
        "inputs_fed": {"dtypes": dtypes, "single": 1, "odd": odd},
        "bare_s": min(bare),
        "simulate_s": min(sim),
        "overhead_ratio": ratio,
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "simulate_breakdown": {k: result["timing"].get(k) for k in ("import_s", "load_s", "clean_predict_s", "images_per_s")},
        "shift_images": args.shift_images,
        "shift_wall_s": shift_wall,
        "shift_corrupt_s_per_1000_images": shifted["timing"]["shift_corrupt_s"] * per_1000,
        "shift_predict_s_per_1000_images": shifted["timing"]["shift_predict_s"] * per_1000,
        "shift_extra_wall_s_per_1000_images": (shift_wall - min(sim)) * per_1000,
        "peak_memory_mb": {"simulate_child": child_peak, "shift_child": shifted["peak_memory_mb"], "bare_process": bare_peak},
        "all_runs_s": {"bare": bare, "simulate": sim},
    }
    print(json.dumps(report, indent=2))
    print(f"\nsimulate / bare = {ratio:.3f} (target <= {TARGET}); {args.variant}, {args.images} images, {profile.name}", file=sys.stderr)
    print(f"shift suite per 1,000 held-out images: corrupting {report['shift_corrupt_s_per_1000_images']:.1f} s, "
          f"predicting {report['shift_predict_s_per_1000_images']:.1f} s, extra wall {report['shift_extra_wall_s_per_1000_images']:.1f} s",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
