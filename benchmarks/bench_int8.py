"""int8 weights: zip size, argmax agreement with float32 on a trained demo run, and int8 ORT speed vs float32 Keras.

    python benchmarks/bench_int8.py [--variants convnext_tiny,convnext_large] [--epochs 3] [--images 64] [--skip-speed]

(1) Zip bytes float32 / fp16 / int8 per variant (weights=None builds plus Gaussian noise, see _float32_export), each zip made
    by build_submission from one float32 export dir (written with the exporter's own weight writer,
    arch.save_weights_npz; export_run's reload checks are skipped, they cost three extra builds of Large and change no
    byte); the int8 zip is build-submission --int8's own path (quantized at build, scored on the probe). Target: Large
    int8 <= 200 MB (10^6 bytes).
(2) Argmax agreement int8 vs float32 on a trained demo run: convnext_test trained on 1600 `cbtool demo-data` images
    (toolkit.data.demo.make_demo, seed 0) for --epochs epochs, exported with --int8, both networks scored on the
    other 800 images. Target >= 99.5%.
(3) Images/s of convnext_tiny at 96 px: float32 Keras model.predict vs the int8 model.onnx of `export --int8`
    (toolkit.export.quantize_onnx_file) in onnxruntime, each in its own fresh process through
    benchmarks/bench_inference.py's children, with ORT's/TF's default threads and with one thread each (per core,
    least distorted by other jobs on a shared machine). Target >= 2x (default threads).
Prints a table with ratios and PASS/MISS per target; exits non-zero only on an error, never on a MISS.

A full default run takes ~10 minutes on 2 cores shared with other jobs (load average 5-7; Large's zips alone ~4 min,
its 726 MB float32 zip is deflated and checked); `--variants convnext_tiny --skip-speed` takes ~2 minutes.

Measured (TF 2.21 / Keras 3.15.1, onnxruntime 1.32, 2 shared cores, load average 5-7 from other agents' benchmarks):
  zip MB (10^6)       float32    fp16    int8   int8/f32  int8/fp16
  convnext_tiny        103.0     51.3    25.9    0.252     0.505
  convnext_large       726.2    361.9   180.1    0.248     0.498    target int8 <= 200 MB: PASS (171.8 MiB)
  agreement: convnext_test, 3 epochs (56 s) on 1600 demo images, 800 held-out: 1.0000 (800/800; max abs softmax diff
    2.26e-2; accuracy 0.909 float32 and int8; probe 32/32)                   target >= 99.5%: PASS
  speed, convnext_tiny 96 px, best of 3 interleaved fresh processes:
    default threads: float32 Keras 17.9 img/s, int8 ORT 9.2 img/s: 0.51x     target >= 2x: MISS
    one thread each: float32 Keras 13.9 img/s, int8 ORT 19.9 img/s: 1.44x (int8 ORT / float32 ORT 1.52x)
    (a single-cycle run: 0.78x and 0.93x; single passes vary up to 3x under this load)
  Why the 2x target is missed: TensorFlow's float32 (oneDNN, AVX-512) is as fast as float32 onnxruntime here (see
  bench_inference.py), so int8 ORT can only win what int8 GEMMs win over float32 ones inside ORT: 1.5x per core, with
  the depthwise convolutions, LayerNorms and GELUs still float32 and every MatMul's activations quantized at run time.
  With two threads ORT's spinning thread pool loses most under other jobs' load (bench_inference.py saw the same).
  Quantizing every op is slower (ConvInteger, ~7 img/s per core); static QDQ calibrated on the probe was within noise
  of dynamic MatMul quantization (toolkit/export.py ONNX_INT8_OPS has the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE_TARGET_MB = 200.0  # convnext_large int8 zip, 10^6 bytes
AGREEMENT_TARGET = 0.995
SPEED_TARGET = 2.0
CLASSES = [f"class_{i}" for i in range(8)]


def _float32_export(variant: str, path: Path) -> Path:
    """An export dir of `variant` with weights=None: the files build_submission reads, float32 weights.npz."""
    from toolkit.artifacts import ExportDir
    from toolkit.families import family_of
    from toolkit.fsutil import write_json
    from toolkit.preprocessing import preprocess
    from toolkit.provenance import preprocessing_sha256
    from toolkit.train.models import model_spec

    spec = model_spec(variant, len(CLASSES), CLASSES, input_size=96)
    arch = family_of(variant).arch_module()
    model = arch.build_model(spec)
    # Gaussian weights as tests/export_data.py perturbs them: random init leaves ConvNeXt's layer-scaled kernels at
    # ~1e-6, which float16 stores in a few bits that deflate then shrinks far below what trained weights give.
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.standard_normal(w.shape, dtype=np.float32) * 0.05 for w in model.get_weights()])
    out = ExportDir(path)
    path.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    probs = np.asarray(model.predict(preprocess(images, 96), verbose=0), np.float32)
    np.savez(out.probe, images=images, labels=np.arange(4), probs=probs)
    arch.save_weights_npz(model, str(out.weights("portable")))
    write_json(out.model_spec, spec)
    write_json(out.classes, {"class_names": CLASSES})
    write_json(out.preprocessing, {"input_size": 96, "resize": "bilinear", "source_sha256": preprocessing_sha256()})
    write_json(out.manifest, {"cbtool_export": 1, "formats": ["portable"], "fp16": False, "int8": False,
                              "parity": {}, "files": {}, "notes": []})
    return path


def sizes(variant: str, tmp: Path) -> dict:
    """Zip bytes of the float32, fp16 and int8 builds of one variant, and the build seconds of each."""
    from toolkit.runtime.profiles import get_profile
    from toolkit.submission.build import BuildOptions, build_submission

    started = time.perf_counter()
    export = _float32_export(variant, tmp / f"{variant}-export")
    row = {"variant": variant, "export_s": time.perf_counter() - started}
    profile = get_profile("an2dl-2024")
    for name, options in (("float32", BuildOptions()), ("fp16", BuildOptions(fp16=True)), ("int8", BuildOptions(int8=True))):
        started = time.perf_counter()
        zip_path = tmp / f"{variant}-{name}.zip"
        result = build_submission(export, zip_path, profile, options)
        row[name] = result.bytes
        row[f"{name}_s"] = time.perf_counter() - started
        zip_path.unlink()
    return row


def agreement(epochs: int, tmp: Path) -> dict:
    """convnext_test trained on demo images, exported with --int8; argmax agreement on 800 held-out demo images."""
    from toolkit.data.demo import make_demo
    from toolkit.data.io import Dataset
    from toolkit.export import export_run
    from toolkit.families import build_model
    from toolkit.arch import load_weights_npz
    from toolkit.int8 import dequantize_arrays
    from toolkit.preprocessing import preprocess
    from toolkit.train.config import resolve_config
    from toolkit.train.fit import train

    data, _ = make_demo(2400, seed=0)

    def part(rows):
        return Dataset(data.images[rows], data.labels[rows], data.class_names, data.original_indices[rows])

    fit, held = part(slice(0, 1600)), part(slice(1600, 2400))
    config = resolve_config(overrides=dict(model="convnext_test", weights="none", epochs=str(epochs), batch_size=32,
                                           lr1=3e-3, lr2=3e-3, warmup_epochs=0, augment="none", patience=0, seed=0))
    started = time.perf_counter()
    run = train(fit, held, config, tmp / "demo-run", verbose=False)
    train_s = time.perf_counter() - started
    manifest = export_run(tmp / "demo-run", tmp / "demo-int8", ["portable"], int8=True).to_dict()
    spec = json.loads((tmp / "demo-int8" / "model_spec.json").read_text())
    x = preprocess(held.images, int(spec["input_size"]))
    f32, i8 = build_model(spec), build_model(spec)
    f32.load_weights(str(tmp / "demo-run" / "best.weights.h5"))
    load_weights_npz(i8, str(tmp / "demo-int8" / "weights.npz"), decode=dequantize_arrays)
    p32, p8 = (np.asarray(m.predict(x, batch_size=64, verbose=0)) for m in (f32, i8))
    return {"n": len(x), "agreement": float(np.mean(p32.argmax(1) == p8.argmax(1))),
            "max_abs_diff": float(np.abs(p32 - p8).max()), "train_s": train_s, "epochs": epochs,
            "accuracy_float32": float(np.mean(p32.argmax(1) == held.labels)),
            "accuracy_int8": float(np.mean(p8.argmax(1) == held.labels)),
            "probe": manifest["parity"]["portable"]["weights_npz"], "completed": bool(run.completed)}


def speed(images: int, cycles: int, tmp: Path) -> dict:
    """Best images/s of float32 Keras and int8 ORT for convnext_tiny at 96 px, fresh processes, interleaved."""
    import bench_inference
    from toolkit.export import quantize_onnx_file

    args = argparse.Namespace(variant="convnext_tiny", images=images, batch=32, repeats=2, input_size=96)
    f32, i8 = tmp / "f32.onnx", tmp / "int8.onnx"
    bench_inference._child("export_onnx", args, ["--onnx", str(f32)])
    quantize_onnx_file(f32, i8)
    best: dict[str, dict] = {}
    candidates = {"keras_f32": ("cbtool_keras", []), "ort_int8": ("cbtool_onnx", ["--onnx", str(i8)]),
                  "keras_f32_1t": ("cbtool_keras_1t", []), "ort_int8_1t": ("cbtool_onnx_1t", ["--onnx", str(i8)]),
                  "ort_f32_1t": ("cbtool_onnx_1t", ["--onnx", str(f32)])}
    for _ in range(cycles):
        for label, (name, extra) in candidates.items():
            found = bench_inference._child(name, args, extra)
            if label not in best or found["images_per_s"] > best[label]["images_per_s"]:
                best[label] = found
    return {"bytes_float32": f32.stat().st_size, "bytes_int8": i8.stat().st_size, **best}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(rows: list[dict], agree: dict | None, fast: dict | None) -> None:
    print(f"int8 benchmark, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if rows:
        print(f"{'variant':<16}{'float32 MB':>12}{'fp16 MB':>10}{'int8 MB':>10}{'int8/f32':>10}{'int8/fp16':>11}   target")
    for r in rows:
        mb = {k: r[k] / 1e6 for k in ("float32", "fp16", "int8")}
        target = (f"int8 <= {SIZE_TARGET_MB:g} MB: {_verdict(mb['int8'] <= SIZE_TARGET_MB)}"
                  if r["variant"] == "convnext_large" else "")
        print(f"{r['variant']:<16}{mb['float32']:>12.1f}{mb['fp16']:>10.1f}{mb['int8']:>10.1f}"
              f"{r['int8'] / r['float32']:>10.3f}{r['int8'] / r['fp16']:>11.3f}   {target}")
        print(f"{'':<16}(MiB: {r['float32'] / 2**20:.1f} / {r['fp16'] / 2**20:.1f} / {r['int8'] / 2**20:.1f}; build s "
              f"{r['float32_s']:.0f} / {r['fp16_s']:.0f} / {r['int8_s']:.0f}, export {r['export_s']:.0f} s)")
    if agree:
        print(f"agreement int8 vs float32, convnext_test trained {agree['epochs']} epochs ({agree['train_s']:.0f} s) on "
              f"1600 demo images, {agree['n']} held-out images: {agree['agreement']:.4f} (max abs diff "
              f"{agree['max_abs_diff']:.2e}; accuracy float32 {agree['accuracy_float32']:.3f}, int8 "
              f"{agree['accuracy_int8']:.3f}; probe {agree['probe']['argmax_agreement']:.3f} of {agree['probe']['n']})"
              f"   target >= {AGREEMENT_TARGET}: {_verdict(agree['agreement'] >= AGREEMENT_TARGET)}")
    if fast:
        for suffix, what in (("", "default threads"), ("_1t", "one thread each, per core")):
            k, o = fast[f"keras_f32{suffix}"], fast[f"ort_int8{suffix}"]
            ratio = o["images_per_s"] / k["images_per_s"]
            target = f"target >= {SPEED_TARGET:g}x: {_verdict(ratio >= SPEED_TARGET)}" if not suffix else "(no target)"
            print(f"convnext_tiny 96 px, {what}: float32 Keras {k['images_per_s']:.1f} img/s ({k['cpu_ms_per_image']:.1f} "
                  f"CPU ms/img), int8 ORT {o['images_per_s']:.1f} img/s ({o['cpu_ms_per_image']:.1f} CPU ms/img): "
                  f"{ratio:.2f}x   {target}")
        ort = fast["ort_int8_1t"]["images_per_s"] / fast["ort_f32_1t"]["images_per_s"]
        print(f"  per core, int8 ORT / float32 ORT ({fast['ort_f32_1t']['images_per_s']:.1f} img/s): {ort:.2f}x; "
              f"model.onnx {fast['bytes_float32'] / 2**20:.1f} MiB float32 -> {fast['bytes_int8'] / 2**20:.1f} MiB int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="convnext_tiny,convnext_large", help="comma list for the size table")
    parser.add_argument("--epochs", type=int, default=3, help="demo training epochs for the agreement")
    parser.add_argument("--images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--cycles", type=int, default=2, help="fresh processes per speed candidate, interleaved "
                        "(best kept: other jobs' load only ever slows a run down)")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cbtool-bench-int8-") as tmp:
        tmp = Path(tmp)
        fast = None if args.skip_speed else speed(args.images, args.cycles, tmp)  # first: no TF in this process yet
        rows = [] if args.skip_sizes else [sizes(v.strip(), tmp) for v in args.variants.split(",") if v.strip()]
        agree = None if args.skip_agreement else agreement(args.epochs, tmp)
    report(rows, agree, fast)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
