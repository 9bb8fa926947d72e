"""Training throughput: cbtool's tf.data pipeline (preprocess + 'basic' augmentation + class weights) vs a plain
`model.fit` on in-memory float32 arrays with no augmentation, same network, optimizer, loss and batch size.

Target: ratio >= 0.8 (augmentation must not starve the model). Each mode runs in its own child process (so the peak
RSS printed is that mode's own), the two alternate, and the best timed epoch of each is compared. The machine's
other load moves wall-clock numbers a lot (2 shared cores), so the CPU seconds per image and the load average
are printed too: the CPU ratio shows what the pipeline costs whatever else runs.

    python benchmarks/bench_train.py [--model convnext_tiny] [--images 256] [--batch-size 32] [--rounds 2]
                                     [--augment basic] [--invariance d4] [--compare robust]

Measured (TF 2.21, Keras 3.15.1, 2 cores, load average ~1): convnext_test 1166 vs 967 img/s, 0.83x (CPU 1.3 vs
1.7 ms/img); convnext_tiny 24.1 vs 26.4 img/s, 1.09x (CPU 74.7 vs 73.3 ms/img). Under load average ~6 the same
runs ranged 0.78x-1.48x for convnext_tiny.

The corrupt stage (`--compare robust`: numpy corruptions from toolkit/corruptions.py through tf.numpy_function, half
the images per batch) costs ~0.2 ms of CPU per image (corrupt_batch alone, 96x96): robust vs basic measured +0.7 ms on
74 ms/img for convnext_tiny (0.92x wall-clock at load average ~8) and +0.1-0.3 ms on 2.0 ms/img for convnext_test
(0.90x at load ~6.5).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data(n: int, k: int = 8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8), rng.integers(0, k, n).astype(np.int64)


def _child(mode: str, model_name: str, n: int, batch: int, epochs: int, invariance: str) -> dict:
    import keras
    import tensorflow as tf

    from toolkit.train import pipeline
    from toolkit.train.augment import Augmenter
    from toolkit.train.config import resolve_config
    from toolkit.train.fit import make_optimizer
    from toolkit.train.models import create_model, model_spec

    images, labels = _data(n)
    k = 8
    config = resolve_config(overrides={"model": model_name, "weights": "none", "batch_size": batch})
    steps, _ = pipeline.steps_per_epoch(n, batch)
    keras.utils.set_random_seed(0)
    model = create_model(model_spec(model_name, k, [str(i) for i in range(k)]), weights="none")
    model.compile(optimizer=make_optimizer(config, 1e-4, steps * (epochs + 1), 0),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"], jit_compile=False)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

    if mode == "plain":
        x = images.astype(np.float32)
        y = np.eye(k, dtype=np.float32)[labels]
        model.fit(x[: steps * batch], y[: steps * batch], batch_size=batch, epochs=epochs + 1, verbose=0, callbacks=[Timer()])
    else:
        ds = pipeline.train_dataset(images, labels, k, input_size=96, resize="bilinear", batch_size=batch, seed=0,
                                    start_epoch=0, end_epoch=epochs + 1, augmenter=Augmenter(mode, 0, invariance),
                                    class_weights=pipeline.class_weight_vector(labels, k, "balanced"))
        model.fit(ds, epochs=epochs + 1, steps_per_epoch=steps, verbose=0, callbacks=[Timer()], shuffle=False)
    timed = times[1:]  # the first epoch traces and warms up
    return {"mode": mode, "images_per_s": steps * batch / min(t for t, _ in timed), "epoch_s": [t for t, _ in timed],
            "cpu_ms_per_image": 1000 * min(c for _, c in timed) / (steps * batch),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def main() -> None:
    from toolkit.families import variant_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnext_tiny", choices=variant_names())
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per child (after one warm-up epoch)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating child runs per mode")
    parser.add_argument("--augment", default="basic", help="a preset or a comma list of stages, e.g. robust or corrupt")
    parser.add_argument("--compare", action="append", default=[], metavar="AUGMENT",
                        help="another augmentation to time in the same rounds (repeatable), e.g. robust: its cost over --augment")
    parser.add_argument("--invariance", default="d4", help="the symmetries the geometric stage draws (d4: all 8)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.images, args.batch_size, args.epochs, args.invariance)))
        return
    best: dict[str, dict] = {}
    cpu: dict[str, float] = {}  # lowest CPU ms per image per mode
    for _ in range(args.rounds):
        for mode in ("plain", args.augment, *args.compare):
            cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--images", str(args.images),
                   "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--invariance", args.invariance]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            print(f"  {mode:>7}: {out['images_per_s']:7.1f} img/s  epochs {[round(t, 1) for t in out['epoch_s']]} s  "
                  f"{out['cpu_ms_per_image']:.1f} CPU ms/img  peak RSS {out['peak_rss_mb']:.0f} MB  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            cpu[mode] = min(cpu.get(mode, float("inf")), out["cpu_ms_per_image"])
            if mode not in best or out["images_per_s"] > best[mode]["images_per_s"]:
                best[mode] = out
    plain, cbtool = best["plain"], best[args.augment]
    ratio = cbtool["images_per_s"] / plain["images_per_s"]
    print(f"model {args.model}, {args.images} images 96x96, batch {args.batch_size}, CPU cores {os.cpu_count()}")
    print(f"plain model.fit on arrays, no augmentation: {plain['images_per_s']:.1f} img/s (peak RSS {plain['peak_rss_mb']:.0f} MB)")
    print(f"cbtool tf.data + preprocess + '{args.augment}' augmentation ({args.invariance}): {cbtool['images_per_s']:.1f} img/s "
          f"(peak RSS {cbtool['peak_rss_mb']:.0f} MB)")
    print(f"ratio cbtool/plain: {ratio:.2f}x wall-clock (target >= 0.8x); "
          f"CPU per image {cpu['plain']:.1f} vs {cpu[args.augment]:.1f} ms "
          f"(ratio {cpu['plain'] / cpu[args.augment]:.2f}x); load average {os.getloadavg()[0]:.1f}")
    for mode in args.compare:
        print(f"'{mode}' vs '{args.augment}': {best[mode]['images_per_s']:.1f} vs {cbtool['images_per_s']:.1f} img/s "
              f"({best[mode]['images_per_s'] / cbtool['images_per_s']:.2f}x), CPU per image {cpu[mode]:.1f} vs "
              f"{cpu[args.augment]:.1f} ms (+{cpu[mode] - cpu[args.augment]:.1f} ms)")


if __name__ == "__main__":
    main()
