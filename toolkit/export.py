"""`cbtool export`: turn a training run dir into an export dir, checking every written format against the probe.

Formats (the files are `toolkit.artifacts.ExportDir`'s):
- portable: Keras 3 weights + named-array weights (Keras 2 and 3) + the model spec; model.py rebuilds the network
  with the family's arch source and loads one of them. Works on Keras 3.4.1 as on the newest Keras.
- keras: the full inference model (loads only where the Keras version is close to ours).
- onnx: from the ONNX-friendly twin (erf GELU) via tf2onnx, opset 15, dynamic batch, checked with onnx.checker and
  onnxruntime: identical argmax and max abs diff <= 1e-4 on the probe, or the export fails.
--fp16 stores the portable weight files as float16 (cast back to float32 at load); the agreement is recorded.
--int8 stores weights.npz with per-channel symmetric int8 kernels (toolkit/int8.py; dequantized with numpy at load)
and writes model.onnx through onnxruntime.quantization (dynamic, per-channel int8 MatMul/Gemm weights; ONNX_INT8_OPS
says why the convolutions stay float32); model.weights.h5 and model.keras stay float32 (Keras reads no int8 file;
model.py loads weights.npz). Lossy, so no 1e-5 gate: the parity entry records argmax agreement and max abs diff
against the float32 network on the probe, and the bytes float32 vs int8; below INT8_MIN_AGREEMENT the export fails
and suggests --fp16.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit import artifacts
from toolkit.artifacts import ExportDir, RunDir
from toolkit.errors import ExportError, UsageError, did_you_mean
from toolkit.families import Family, family_of, get_variant
from toolkit.fsutil import current_umask, sha256_file, write_json
from toolkit.results import Result
from toolkit.train import recover

FORMATS = tuple(artifacts.FORMATS)
ONNX_OPSET = 15
ONNX_TOLERANCE = 1e-4
RELOAD_TOLERANCE = 1e-5
RUN_PROBE_TOLERANCE = 1e-4
# int8 is lossy, so it is gated on argmax agreement with the float32 network on the probe, not on a tolerance. Per-channel
# weight-only int8 moved a trained demo network's softmax by at most 2.3e-2 and flipped none of 800 argmaxes
# (benchmarks/bench_int8.py); at the default 32 probe images one flip (0.969) passes and two (0.938) fail: a model that
# loses 2 of 32 probe decisions to rounding has channels int8 cannot hold, and --fp16 is the safe size reduction then.
INT8_MIN_AGREEMENT = 0.95


@dataclass
class ExportResult(Result):
    """What `export_run` wrote: the export manifest (manifest.json holds these fields, without schema_version)."""

    cbtool_export: int
    created: str
    run_dir: str
    formats: list[str]
    fp16: bool
    model: dict
    versions: dict
    preprocessing: dict
    arch: dict
    parity: dict
    files: dict
    notes: list[str]
    partial: dict | None = None  # `--partial`: the unfinished run's epochs_done, best_epoch, best_val_accuracy
    int8: bool = False  # `--int8`: weights.npz kernels and model.onnx in int8 (parity holds the agreement)

    def manifest(self) -> dict:
        """The manifest.json document."""
        return dataclasses.asdict(self)


def parse_formats(text: str) -> list[str]:
    """"portable,onnx" -> ["portable", "onnx"], in canonical order, unknown names refused."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        hint = did_you_mean(unknown[0], FORMATS) if unknown else ""
        raise UsageError(f"--format: unknown {', '.join(unknown) or '(empty)'}{hint}; expected a comma list of "
                         f"{', '.join(FORMATS)}")
    return [f for f in FORMATS if f in names]


def export_run(run_dir: str | os.PathLike, export_dir: str | os.PathLike, formats: list[str] | tuple = ("portable",),
               fp16: bool = False, log: Callable[[str], None] | None = None, partial: bool = False,
               int8: bool = False) -> ExportResult:
    """Export the run in `run_dir` to `export_dir` (replaced atomically); return the manifest as a result.

    An unfinished run is refused unless `partial`: then its best weights so far are exported and the manifest says so.
    `int8`: int8 kernels in weights.npz and a quantized model.onnx, refused below INT8_MIN_AGREEMENT on the probe."""
    log = log or (lambda _msg: None)
    if fp16 and int8:
        raise UsageError("--fp16 and --int8 are exclusive: choose one weight storage")
    run_dir, export_dir = Path(run_dir), Path(export_dir)
    formats = [f for f in FORMATS if f in formats]
    if int8 and not set(formats) & {"portable", "onnx"}:
        raise UsageError("--int8: model.keras has no int8 form; add portable or onnx to --format")
    run = _read_run(run_dir, partial)
    family = family_of(run["spec"]["variant"])
    if "onnx" in formats and not family.onnx_twin:
        raise ExportError(f"--format onnx: the {family.name} family has no ONNX-friendly twin; drop onnx")
    _check_target(export_dir, run_dir)
    model = family.arch_module().build_model(run["spec"])
    model.load_weights(str(RunDir(run_dir).best_weights))
    x = _probe_inputs(run)
    reference = _predict(model, x)
    if run["partial"] is None:
        parity = {"run_probe": _check_run_probe(run, run_dir, reference)}
    else:
        # No final evaluation wrote probe probabilities: the best weights so far define the export's probe.
        run["probe"]["probs"] = reference
        parity = {"run_probe": {"skipped": "unfinished run: probe probabilities computed from the best weights so far"}}
        log(f"unfinished run: exporting the best weights so far (epoch {run['partial']['best_epoch']} of "
            f"{run['partial']['epochs_done']} done)")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", dir=export_dir.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; the export dir is an ordinary directory
    try:
        out = ExportDir(tmp)
        for name in out.copied_from_run():
            if name == out.probe.name and run["partial"] is not None:
                np.savez(out.probe, **run["probe"])
            else:
                shutil.copy2(run_dir / name, out / name)
        parity.update(_write_formats(model, family, run["spec"], out, formats, x, reference, fp16, log, int8))
        result = _manifest(run, run_dir, out, formats, fp16, parity, model, family, int8)
        write_json(out.manifest, result.manifest())
        _replace_dir(tmp, export_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _write_formats(model, family: Family, spec: dict, out: ExportDir, formats: list[str], x: np.ndarray,
                   reference: np.ndarray, fp16: bool, log: Callable[[str], None], int8: bool = False) -> dict:
    """Write each requested format into `out`; its parity numbers by format."""
    parity = {}
    if "portable" in formats:
        log(f"writing portable weights ({out.keras_weights.name}, {out.weights('portable').name})"
            + (" with int8 kernels" if int8 else ""))
        parity["portable"] = (_write_portable_int8(model, family, spec, out, x, reference) if int8 else
                              _write_portable(model, family, spec, out, x, reference, fp16))
    if "keras" in formats:
        log(f"writing {out.weights('keras').name}")
        parity["keras"] = _write_keras(model, out.weights("keras"), x, reference)
    if "onnx" in formats:
        log("converting to ONNX (tf2onnx) and checking with onnxruntime" + (", then quantizing to int8" if int8 else ""))
        parity["onnx"] = _write_onnx(model, spec, out.weights("onnx"), x, reference, int8)
    return parity


def _check_run_probe(run: dict, run_dir: Path, reference: np.ndarray) -> dict:
    """The run's recorded probe probabilities against the reloaded best weights: they must agree."""
    paths = RunDir(run_dir)
    found = _compare(run["probe"]["probs"], reference)
    if found["max_abs_diff"] > RUN_PROBE_TOLERANCE or found["argmax_agreement"] < 1.0:
        raise ExportError(f"{paths.best_weights} does not reproduce {paths.probe.name}'s probabilities "
                          f"(max abs diff {found['max_abs_diff']:.2e}, argmax agreement "
                          f"{found['argmax_agreement']:.3f}): the weights, spec or preprocessing changed")
    return found


def _read_run(run_dir: Path, partial: bool = False) -> dict:
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: not a directory (expected a run dir written by cbtool train)")
    paths = RunDir(run_dir)
    state = recover.read_state(run_dir)
    unfinished = state is not None and not state.get("completed")
    if unfinished and not partial:
        raise ExportError(recover.unfinished_message(run_dir, state))
    needed = [p for p in paths.required() if not (unfinished and p == paths.probe)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        if unfinished and paths.best_weights.name in missing:
            raise ExportError(f"{run_dir}: no epoch has finished yet, so there are no weights to export; resume it")
        raise ExportError(f"{run_dir}: missing {', '.join(missing)} (is the training run finished?)")
    spec = paths.read_json(paths.model_spec, ExportError)
    classes = paths.read_json(paths.classes, ExportError)
    prep = paths.read_json(paths.preprocessing, ExportError)
    probe = _read_probe(run_dir, unfinished)
    if "variant" not in spec:
        raise ExportError(f"{paths.model_spec}: no 'variant' field")
    for key in ("input_size", "num_classes", *get_variant(spec["variant"]).arch):
        if key not in spec:
            raise ExportError(f"{paths.model_spec}: no '{key}' field")
    for key in ("images",) if unfinished else ("images", "probs"):
        if key not in probe:
            raise ExportError(f"{paths.probe}: no '{key}' array")
    if not unfinished and probe["probs"].shape != (len(probe["images"]), int(spec["num_classes"])):
        raise ExportError(f"{paths.probe}: probs has shape {probe['probs'].shape}, expected "
                          f"({len(probe['images'])}, {spec['num_classes']})")
    if list(classes.get("class_names", [])) != list(spec.get("class_names", classes.get("class_names", []))):
        raise ExportError(f"{run_dir}: {paths.classes.name} and {paths.model_spec.name} disagree on the class names")
    return {"spec": spec, "classes": classes, "preprocessing": prep, "probe": probe,
            "partial": recover.partial_record(state) if unfinished else None}


def _read_probe(run_dir: Path, unfinished: bool) -> dict:
    """The finished run's probe.npz; for an unfinished run the probe images it saved when it started."""
    paths = RunDir(run_dir)
    if unfinished:
        probe = recover.read_probe_inputs(run_dir)
        if probe is None:
            raise ExportError(f"{recover.probe_inputs_path(run_dir)}: missing (the run predates partial exports); "
                              "resume the run to its end instead")
        return probe
    try:
        with np.load(paths.probe, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ExportError(f"{paths.probe}: unreadable run file: {exc}") from exc


def _check_target(export_dir: Path, run_dir: Path) -> None:
    if export_dir.resolve() == run_dir.resolve():
        raise ExportError(f"-o {export_dir}: the export dir must not be the run dir")
    previous = ExportDir(export_dir).manifest.exists()
    if export_dir.exists() and (not export_dir.is_dir() or (any(export_dir.iterdir()) and not previous)):
        raise ExportError(f"-o {export_dir}: exists and is not an empty dir or a previous export; choose another path")


def _replace_dir(tmp: Path, export_dir: Path) -> None:
    if export_dir.exists():
        old = export_dir.with_name(f".{export_dir.name}.old-{os.getpid()}")
        os.replace(export_dir, old)
        os.replace(tmp, export_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, export_dir)


def _probe_inputs(run: dict) -> np.ndarray:
    from toolkit.preprocessing import preprocess

    prep = run["preprocessing"]
    size = int(prep.get("input_size", run["spec"]["input_size"]))
    return preprocess(run["probe"]["images"], input_size=size, resize=prep.get("resize", "bilinear"))


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=32, verbose=0), dtype=np.float32)


def _compare(expected: np.ndarray, actual: np.ndarray) -> dict:
    expected, actual = np.asarray(expected, np.float32), np.asarray(actual, np.float32)
    agree = float(np.mean(expected.argmax(1) == actual.argmax(1))) if len(expected) else 1.0
    diff = float(np.abs(expected - actual).max()) if expected.size else 0.0
    return {"n": int(len(expected)), "argmax_agreement": agree, "max_abs_diff": diff}


def _write_portable(model, family: Family, spec: dict, out: ExportDir, x: np.ndarray, reference: np.ndarray,
                    fp16: bool) -> dict:
    arch = family.arch_module()
    h5, npz = out.keras_weights, out.weights("portable")
    model.save_weights(str(h5))
    if fp16:
        _h5_to_float16(h5)
    arch.save_weights_npz(model, str(npz), dtype="float16" if fp16 else None)
    result = {"dtype": "float16" if fp16 else "float32"}
    for name, load in (("weights_h5", lambda m: m.load_weights(str(h5))),
                       ("weights_npz", lambda m: arch.load_weights_npz(m, str(npz)))):
        fresh = arch.build_model(spec)
        load(fresh)
        result[name] = _compare(reference, _predict(fresh, x))
        if not fp16 and (result[name]["max_abs_diff"] > RELOAD_TOLERANCE or result[name]["argmax_agreement"] < 1.0):
            raise ExportError(f"portable {name}: reloading changes the outputs ({result[name]})")
    return result


def _write_portable_int8(model, family: Family, spec: dict, out: ExportDir, x: np.ndarray, reference: np.ndarray) -> dict:
    """model.weights.h5 float32 (exact, checked as usual); weights.npz with int8 kernels, gated on argmax agreement."""
    from toolkit.int8 import dequantize_arrays, quantize_arrays

    arch = family.arch_module()
    h5, npz = out.keras_weights, out.weights("portable")
    model.save_weights(str(h5))
    fresh = arch.build_model(spec)
    fresh.load_weights(str(h5))
    result = {"dtype": "int8", "weights_h5": _compare(reference, _predict(fresh, x))}
    if result["weights_h5"]["max_abs_diff"] > RELOAD_TOLERANCE or result["weights_h5"]["argmax_agreement"] < 1.0:
        raise ExportError(f"portable weights_h5: reloading changes the outputs ({result['weights_h5']})")
    arrays = arch.weight_arrays(model)
    quantized = quantize_arrays(arrays)
    arch.save_weights_npz(model, str(npz), encode=lambda _arrays: quantized)
    fresh = arch.build_model(spec)
    arch.load_weights_npz(fresh, str(npz), decode=dequantize_arrays)
    result["weights_npz"] = int8_agreement(reference, _predict(fresh, x), _array_bytes(arrays), _array_bytes(quantized),
                                           npz.name)
    return result


def int8_agreement(reference: np.ndarray, outputs: np.ndarray, bytes_float32: int, bytes_int8: int, what: str) -> dict:
    """The int8 parity entry (argmax agreement, max abs diff, bytes float32 vs int8); ExportError below the floor."""
    found = _compare(reference, outputs)
    found.update(min_agreement=INT8_MIN_AGREEMENT, bytes_float32=int(bytes_float32), bytes_int8=int(bytes_int8))
    if found["argmax_agreement"] < INT8_MIN_AGREEMENT:
        raise ExportError(f"{what}: int8 weights agree with float32 on {found['argmax_agreement']:.3f} of {found['n']} "
                          f"probe images, below the int8 floor {INT8_MIN_AGREEMENT} (max abs diff "
                          f"{found['max_abs_diff']:.2e}); use --fp16 instead (half the size, no measurable loss)")
    return found


def quantize_export(export_dir: str | os.PathLike, fmt: str, target: str | os.PathLike,
                    log: Callable[[str], None] | None = None) -> Path:
    """A copy of the float32 export `export_dir` at `target` whose `fmt` weights are int8, its manifest saying so.

    portable: weights.npz quantized with toolkit/int8.py, scored in TensorFlow; onnx: model.onnx through
    onnxruntime.quantization. The agreement is measured on the export's probe.npz against its float32 probabilities
    and refused below INT8_MIN_AGREEMENT, as in `export --int8`."""
    log = log or (lambda _msg: None)
    source, out = ExportDir(Path(export_dir)), ExportDir(Path(target))
    manifest = source.read_json(source.manifest, ExportError)
    if manifest.get("fp16") or manifest.get("int8"):
        raise ExportError(f"{source.path}: already {'float16' if manifest.get('fp16') else 'int8'}; --int8 quantizes a "
                          "float32 export (re-export the run without --fp16)")
    if fmt not in ("portable", "onnx"):
        raise UsageError(f"--int8: the {fmt} format has no int8 form; use --format portable or onnx")
    out.path.mkdir(parents=True)
    for name in out.copied_from_run():  # the derived export holds only what a build of `fmt` reads
        shutil.copy2(source.path / name, out.path / name)
    if fmt == "onnx":
        shutil.copy2(source.weights(fmt), out.weights(fmt))
    probe = _read_probe(source.path, False)
    prep = source.read_json(source.preprocessing, ExportError)
    x = _probe_inputs({"preprocessing": prep, "spec": source.read_json(source.model_spec, ExportError), "probe": probe})
    log(f"{source.path} is float32: quantizing its {out.weights(fmt).name} to int8 and scoring it on {len(x)} probe images")
    if fmt == "onnx":
        entry = _quantize_onnx(out.weights(fmt), x, probe["probs"])
        manifest["parity"]["onnx"] = {"float32": manifest["parity"].get("onnx"), **entry}
    else:
        entry = _quantize_npz(source, out, x, probe["probs"])
        manifest["parity"]["portable"] = {"dtype": "int8", "weights_npz": entry}
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(out.path.iterdir()) if p.is_file() and p != out.manifest}
    note = f"int8 {out.weights(fmt).name} quantized at build from the float32 export {source.path}"
    manifest.update(int8=True, formats=[fmt], notes=[*manifest.get("notes", []), note])
    write_json(out.manifest, manifest)
    return out.path


def _quantize_npz(source: ExportDir, out: ExportDir, x: np.ndarray, reference: np.ndarray) -> dict:
    from toolkit.families import build_model, family_of
    from toolkit.int8 import dequantize_arrays, quantize_arrays

    spec = source.read_json(source.model_spec, ExportError)
    with np.load(source.weights("portable"), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    quantized = quantize_arrays(arrays)
    with open(out.weights("portable"), "wb") as handle:  # a handle, so numpy does not append ".npz"
        np.savez(handle, **quantized)
    model = build_model(spec)
    family_of(spec["variant"]).arch_module().load_weights_npz(model, str(out.weights("portable")), decode=dequantize_arrays)
    return int8_agreement(reference, _predict(model, x), _array_bytes(arrays), _array_bytes(quantized),
                          out.weights("portable").name)


def _array_bytes(arrays: dict) -> int:
    return sum(int(np.asarray(v).nbytes) for v in arrays.values())


def _h5_to_float16(path: Path) -> None:
    """Rewrite a Keras .weights.h5 with every float32 dataset as float16 (Keras casts back to the variable dtype).

    A new file is written: deleting datasets in place would not give the space back."""
    import h5py

    tmp = path.with_name(path.name + ".fp16.tmp")

    def copy(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            target = fout.require_group(name)
        else:
            data = obj[()]
            if obj.dtype == np.float32:
                data = np.asarray(data, dtype=np.float16)
            target = fout.create_dataset(name, data=data)
        target.attrs.update(dict(obj.attrs))

    with h5py.File(path, "r") as fin, h5py.File(tmp, "w") as fout:
        fout.attrs.update(dict(fin.attrs))
        fin.visititems(copy)
    os.replace(tmp, path)


def _write_keras(model, path: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    import keras

    model.save(str(path))
    loaded = keras.saving.load_model(str(path), compile=False)
    result = _compare(reference, _predict(loaded, x))
    if result["max_abs_diff"] > RELOAD_TOLERANCE or result["argmax_agreement"] < 1.0:
        raise ExportError(f"{path.name}: reloading changes the outputs ({result})")
    return result


def _write_onnx(model, spec: dict, path: Path, x: np.ndarray, reference: np.ndarray, int8: bool = False) -> dict:
    started = time.perf_counter()
    _convert_onnx(model, spec, path)
    convert_s = time.perf_counter() - started
    outputs = _run_onnx(path, x)
    result = _compare(reference, outputs)
    result.update(opset=ONNX_OPSET, tolerance=ONNX_TOLERANCE, convert_seconds=round(convert_s, 2), converter="tf2onnx")
    if int8 and result["argmax_agreement"] == 1.0 and result["max_abs_diff"] <= ONNX_TOLERANCE:
        return {"float32": result, **_quantize_onnx(path, x, reference)}
    if result["argmax_agreement"] < 1.0 or result["max_abs_diff"] > ONNX_TOLERANCE:
        raise ExportError(f"{path.name} fails the onnxruntime parity check on {result['n']} probe images: argmax "
                          f"agreement {result['argmax_agreement']:.3f}, max abs diff {result['max_abs_diff']:.2e} "
                          f"(tolerance {ONNX_TOLERANCE})")
    return result


def _convert_onnx(model, spec: dict, path: Path) -> None:
    """tf2onnx on the erf-GELU twin; the converter's exit is not trusted: onnx.checker runs on the result."""
    try:
        import onnx
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ExportError(f"--format onnx needs tf2onnx and onnx ({exc}); pip install 'cbtool[onnx]' or drop onnx") from exc
    from toolkit.families import build_model

    twin = build_model(spec, onnx_friendly=True)
    twin.set_weights(model.get_weights())
    size = int(spec["input_size"])
    signature = [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]
    try:
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda image: twin(image, training=False)),
                                                 input_signature=signature, opset=ONNX_OPSET)
    except Exception as exc:  # tf2onnx raises many types; the message is what matters
        raise ExportError(f"tf2onnx {tf2onnx.__version__} could not convert the model with TensorFlow "
                          f"{tf.__version__}: {type(exc).__name__}: {exc}") from exc
    _name_io(proto)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"{path.name} written by tf2onnx fails onnx.checker: {exc}") from exc


def _quantize_onnx(path: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    """Replace the float32 model.onnx (parity-checked) by onnxruntime.quantization's dynamic int8 model (ONNX_INT8_METHOD:
    per-channel symmetric int8 weights of the MatMul/Gemm layers, activations quantized per batch at run time)."""
    tmp = path.with_name(path.name + ".int8.tmp")
    quantize_onnx_file(path, tmp)
    bytes_float32, bytes_int8 = path.stat().st_size, tmp.stat().st_size
    os.replace(tmp, path)
    found = int8_agreement(reference, _run_onnx(path, x), bytes_float32, bytes_int8, f"{path.name} (int8)")
    return {**found, "dtype": "int8", "quantization": ONNX_INT8_METHOD}


# Measured on convnext_tiny at 96 px, one thread, best of 3 interleaved fresh processes on 2 shared cores (load 5-7;
# single passes varied up to 3x), images/s (CPU ms per image): float32 Keras 21.4 (20.1), float32 ORT 19.1 (27.9);
# quantize_dynamic on every op ~7 (53: ORT's ConvInteger has no fast grouped kernel for the 7x7 depthwise
# convolutions, so it is slower than float32); on MatMul only, per-channel 23.2 (18.2), per-tensor 21.6 (17.5); static
# QDQ calibrated on the probe 24.6 (15.6). Static is within noise of dynamic but takes its activation ranges from a few
# probe images (clipping other images'), so the dynamic MatMul/Gemm form is used: no calibration, ranges per batch, and
# the pointwise Dense layers it quantizes hold most of the weights and ~70% of ORT's time.
ONNX_INT8_OPS = ("MatMul", "Gemm")
ONNX_INT8_METHOD = f"onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8, op_types_to_quantize={list(ONNX_INT8_OPS)})"


def quantize_onnx_file(source: Path, target: Path) -> None:
    """ONNX_INT8_METHOD from `source` to `target` (removed again if the quantizer fails); convolutions stay float32."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ExportError(f"--int8 with onnx needs onnxruntime.quantization ({exc})") from exc
    try:
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(ONNX_INT8_OPS))
    except Exception as exc:  # the quantizer raises many types; the message is what matters
        Path(target).unlink(missing_ok=True)
        raise ExportError(f"onnxruntime.quantization could not quantize {source.name}: {type(exc).__name__}: {exc}") from exc


def _name_io(proto) -> None:
    """Give the graph stable names: input "image" with batch dim "batch", output "probs"."""
    graph = proto.graph
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["probs" if o == old else o for o in node.output]
        node.input[:] = ["probs" if i == old else i for i in node.input]
    graph.output[0].name = "probs"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"the ONNX parity check needs onnxruntime ({exc})") from exc
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0], dtype=np.float32)
    except Exception as exc:
        raise ExportError(f"onnxruntime {ort.__version__} cannot run {path.name}: {type(exc).__name__}: {exc}") from exc


def _manifest(run: dict, run_dir: Path, out: ExportDir, formats: list[str], fp16: bool, parity: dict, model,
              family: Family, int8: bool = False) -> ExportResult:
    from toolkit.provenance import preprocessing_sha256

    current = preprocessing_sha256()
    recorded = run["preprocessing"].get("source_sha256")
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(out.path.iterdir()) if p.is_file()}
    spec = run["spec"]
    notes = []
    if fp16 and set(formats) & {"keras", "onnx"}:
        notes.append(f"--fp16 applies to the portable weight files; {artifacts.weights_file('keras')} and "
                     f"{artifacts.weights_file('onnx')} stay float32")
    if int8 and set(formats) & {"portable", "keras"}:
        notes.append(f"--int8 applies to {artifacts.weights_file('portable')} and {artifacts.weights_file('onnx')}; "
                     f"{ExportDir(out.path).keras_weights.name} and {artifacts.weights_file('keras')} stay float32")
    if recorded != current:
        notes.append("toolkit/preprocessing.py changed since training: its sha256 differs from the run's")
    if run["partial"] is not None:
        notes.append(f"unfinished run: the best weights so far (epoch {run['partial']['best_epoch']} of "
                     f"{run['partial']['epochs_done']} done)")
    return ExportResult(
        cbtool_export=1,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        run_dir=str(run_dir.resolve()),
        formats=formats,
        fp16=fp16,
        model={"variant": spec["variant"], "input_size": int(spec["input_size"]), "num_classes": int(spec["num_classes"]),
               "parameters": int(model.count_params()), "input_layer": family.input_layer},
        versions=_versions(formats),
        preprocessing={"sha256": current, "run_sha256": recorded, "matches_run": recorded == current,
                       **{k: v for k, v in run["preprocessing"].items() if k != "source_sha256"}},
        arch={"source": f"toolkit/{family.arch_source}", "sha256": sha256_file(family.arch_path),
              "arch_version": spec.get("arch_version", 1)},
        parity=parity,
        files=files,
        notes=notes,
        partial=run["partial"],
        int8=int8,
    )


def _versions(formats: list[str]) -> dict:
    """The library versions the export ran with; the ONNX toolchain's when it was used."""
    from toolkit.provenance import versions

    info = versions(with_tensorflow=True)
    if "onnx" in formats:
        import onnx
        import onnxruntime
        import tf2onnx

        info.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, tf2onnx=tf2onnx.__version__)
    return info
