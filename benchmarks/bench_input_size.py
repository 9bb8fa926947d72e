"""What upscaled input (`cbtool train --input-size N`) costs per image against the native 96 px, measured in one run.

    python benchmarks/bench_input_size.py [--variants convnext_tiny,efficientnetv2_b0] [--sizes 96,224]
                                          [--images 16] [--batch 16] [--repeats 3] [--threads 1]
                                          [--train-variant efficientnetv2_b0] [--train-sizes 96,224] [--train-batch 16]

The default run is 3 processes (~1.5 min on an idle 2-core machine; 370 s at load average 8).

Predict: what a submission's `predict` does per image at size N: toolkit.preprocessing's numpy resize of raw 96x96
uint8 pixels to NxN (timed apart: `resize ms`), then the cbtool network (toolkit.families.build_model, the portable
rebuild) `model.predict` in batches of --batch. Train: one optimizer step (AdamW, cross-entropy, every layer trainable,
as phase 2) on preprocessed NxN batches of --train-batch, after two warm-up steps; the tf.data augmentation is
bench_train.py's subject and is left out here. One fresh process per (predict|train, variant) builds a network per
size and times them in interleaved rounds (best of --repeats / --train-steps kept), so other jobs' load hits every size
alike and every ratio divides numbers of the same process. One TensorFlow thread by default: the per-core cost, which
load distorts least; `CPU x96` (process CPU time per image) is the load-independent view. The convolutions' work grows
with the pixel count, (N/96)^2 (5.44x at 224, 7.34x at 260): the table prints the measured ratio beside it. Expected:
the measured ratio near (N/96)^2 for ConvNeXt (dense 4x4 patchify, every stage's work scales with pixels); below it
where fixed per-layer costs weigh at 96 px (EfficientNetV2's late stages run on 3x3 maps). The resize itself is
noise (<= 15 ms per image at 260).

Measured (TF 2.21 / Keras 3.15.1, one thread on 2 shared cores, float32; load average 4-8 from other jobs during
every run, so ranges over three runs, the first two with one process per size):
                        predict: total (wall) x96 / CPU x96          train step (CPU x96)
  convnext_tiny      224: 2.6x-7.2x / 4.5x-6.3x   (96 px: 49-105 ms/img; 224: 245-374 ms/img)
                     160: 3.1x / 2.7x;  260: 10.4x-11.5x / 7.9x-10.3x
  efficientnetv2_b0  224: 2.3x-6.2x / 2.5x-4.7x   (96 px: 11-33 ms/img; 224: 62-89 ms/img)   224: 2.5x-4.5x
                     160: 1.7x / 1.4x;  260: 5.4x-15.7x / 5.0x-8.1x                        (96: 58-179 ms/img,
  efficientnetv2_s   224: 2.9x / 3.8x;  160: 1.0x / 1.5x;  260: 3.6x / 4.6x (one run)       224: 252-360 ms/img)
So at 224 px a ConvNeXt costs about the pixel ratio, ~5.4x per image in CPU time (convnext_tiny 245-374 ms per image
on one core, before TTA: d4 multiplies it by 8), EfficientNetV2 roughly 3-5x, a training step 2.5-4.5x. Peak RSS of a predict process at 224 with batch 32:
convnext_tiny 1.3 GB (0.8 at 96), efficientnetv2_b0 0.87 GB (0.69), far below the profiles' memory budget; a
phase-2 training step of efficientnetv2_b0, batch 16 at 224: 2.3 GB (1.45 at 96). The largest case, measured apart
with the same build_model + predict: convnext_xlarge at 224, one batch of 64 (build-submission's default --batch-size;
TTA views run one after another): peak RSS 4.9 GB (2.1 GB built), 99 s for the 64 images on 2 loaded cores. Rerun on an idle machine for
tighter numbers:
    python benchmarks/bench_input_size.py --variants convnext_tiny,efficientnetv2_b0,efficientnetv2_s --sizes 96,160,224,260
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASE = 96  # the graders' image side (AN2DL 2023 and 2024): every ratio is against it


def _spec(variant: str, size: int) -> dict:
    from toolkit.train.models import model_spec

    return model_spec(variant, 8, [f"c{i}" for i in range(8)], input_size=size)


def _raw(n: int):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (n, BASE, BASE, 3), dtype=np.uint8)


def _threads(n: int) -> None:
    import tensorflow as tf

    if n:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def _interleaved(steps: dict[int, callable], repeats: int) -> dict[int, tuple[float, float]]:
    """size -> (best wall seconds, that call's CPU seconds) over `repeats` rounds that call every size's step in
    turn: in one process, so load from other jobs and the machine's state hit every size alike."""
    best = {size: (float("inf"), 0.0) for size in steps}
    for _ in range(repeats):
        for size, step in steps.items():
            start, cpu = time.perf_counter(), time.process_time()
            step()
            wall = time.perf_counter() - start
            if wall < best[size][0]:
                best[size] = (wall, time.process_time() - cpu)
    return best


def _predict(variant: str, sizes: list[int], args) -> dict:
    from toolkit.families import build_model
    from toolkit.preprocessing import preprocess

    _threads(args.threads)
    raw = _raw(args.images)
    resize = _interleaved({s: (lambda s=s: preprocess(raw, s, "bilinear")) for s in sizes}, args.repeats)
    steps = {}
    for size in sizes:
        x, model = preprocess(raw, size, "bilinear"), build_model(_spec(variant, size))
        steps[size] = lambda x=x, model=model: model.predict(x, batch_size=args.batch, verbose=0)
        steps[size]()  # warm-up: traces the predict function
    net = _interleaved(steps, args.repeats)
    n = len(raw)
    return {str(s): {"net_ms": net[s][0] * 1000 / n, "resize_ms": resize[s][0] * 1000 / n,
                     "cpu_ms": net[s][1] * 1000 / n} for s in sizes}


def _train(variant: str, sizes: list[int], args) -> dict:
    import keras
    import numpy as np

    from toolkit.families import build_model
    from toolkit.preprocessing import preprocess

    _threads(args.threads)
    n = args.train_batch
    y = keras.utils.to_categorical(np.arange(n) % 8, 8)
    steps = {}
    for size in sizes:
        x, model = preprocess(_raw(n), size, "bilinear"), build_model(_spec(variant, size))
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy")
        steps[size] = lambda x=x, model=model: model.train_on_batch(x, y)
        steps[size](), steps[size]()  # compile, then settle
    best = _interleaved(steps, args.train_steps)
    return {str(s): {"net_ms": best[s][0] * 1000 / n, "resize_ms": 0.0, "cpu_ms": best[s][1] * 1000 / n} for s in sizes}


def _child(kind: str, variant: str, sizes: list[int], args) -> dict:
    cmd = [sys.executable, __file__, "--one", f"{kind}:{variant}:{','.join(map(str, sizes))}", "--images",
           str(args.images), "--batch", str(args.batch), "--repeats", str(args.repeats), "--train-batch",
           str(args.train_batch), "--train-steps", str(args.train_steps), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} {variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def _measure(args) -> dict[tuple[str, str, int], dict]:
    """(kind, variant, size) -> timings: one fresh process per (kind, variant), all its sizes interleaved inside."""
    jobs = [("predict", v, args.sizes) for v in args.variants] + [("train", args.train_variant, args.train_sizes)]
    results: dict[tuple[str, str, int], dict] = {}
    for kind, variant, sizes in jobs:
        r = _child(kind, variant, sizes, args)
        peak = r.pop("peak_rss_mb")
        for size, timing in r.items():
            results[(kind, variant, int(size))] = {**timing, "peak_rss_mb": peak}
    return results


def _table(results: dict[tuple[str, str, int], dict]) -> list[str]:
    """One row per (kind, variant, size): ms per image (network, resize), CPU ms, peak RSS, and the ratios to 96 px."""
    head = (f"{'':7} {'variant':<18} {'size':>4} {'net ms/img':>10} {'resize ms':>9} {'total x96':>9} "
            f"{'CPU x96':>7} {'(N/96)^2':>8} {'peak RSS':>8}")  # peak RSS: the process's, all its sizes loaded
    rows = [head]
    for (kind, variant, size), r in results.items():
        base = results.get((kind, variant, BASE))
        total = r["net_ms"] + r["resize_ms"]
        ratio = f"{total / (base['net_ms'] + base['resize_ms']):8.2f}x" if base else f"{'-':>9}"
        cpu = f"{r['cpu_ms'] / base['cpu_ms']:6.2f}x" if base else f"{'-':>7}"
        rows.append(f"{kind:<7} {variant:<18} {size:>4} {r['net_ms']:10.1f} {r['resize_ms']:9.2f} {ratio} {cpu} "
                    f"{(size / BASE) ** 2:7.2f}x {r['peak_rss_mb']:6.0f}MB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    split = lambda text: [t for t in text.split(",") if t]  # noqa: E731
    parser.add_argument("--variants", type=split, default=["convnext_tiny", "efficientnetv2_b0"])
    parser.add_argument("--sizes", type=lambda t: [int(s) for s in split(t)], default=[96, 224],
                        help="input sides to time (must include 96; e.g. 96,160,224,260)")
    parser.add_argument("--images", type=int, default=16, help="images per timed predict pass")
    parser.add_argument("--batch", type=int, default=16, help="predict batch size")
    parser.add_argument("--repeats", type=int, default=3, help="timed predict rounds (every size once per round)")
    parser.add_argument("--train-variant", default="efficientnetv2_b0")
    parser.add_argument("--train-sizes", type=lambda t: [int(s) for s in split(t)], default=[96, 224])
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=3, help="timed optimizer rounds (every size once per round)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads (0 = TF's "
                        "default, all cores): 1 is the per-core cost, the least distorted by other jobs' load")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, variant, sizes = args.one.split(":")
        r = (_predict if kind == "predict" else _train)(variant, [int(s) for s in sizes.split(",")], args)
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(r))
        return
    if BASE not in args.sizes or BASE not in args.train_sizes:
        parser.error(f"--sizes and --train-sizes must include {BASE}: every ratio is against it")
    started = time.perf_counter()
    results = _measure(args)
    print(f"input size cost vs {BASE} px: predict {args.images} images (batch {args.batch}, best of "
          f"{args.repeats}), train batch {args.train_batch} (best of {args.train_steps} steps); sizes interleaved; "
          f"{args.threads or 'all'} thread(s) of {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {time.perf_counter() - started:.0f} s")
    print("\n".join(_table(results)))


if __name__ == "__main__":
    main()
