"""`cbtool build-submission`: an export dir (or a run dir, exported first) -> a deterministic submission zip."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.artifacts import FORMATS, SUBMISSION_FILES, ExportDir, RunDir
from toolkit.errors import RuntimeProfileError, SubmissionError, UsageError
from toolkit.fsutil import atomic_path, sha256_bytes, sha256_file
from toolkit.results import Result
from toolkit.runtime.profiles import Profile
from toolkit.submission.check import CheckReport
from toolkit.submission.render import TTA_CHOICES, render_model_py
from toolkit.submission.tta_auto import AUTO, AutoOptions
from toolkit.train import recover
from toolkit.tta import TTA_VIEWS

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


@dataclass
class BuildResult(Result):
    """The zip written, its sha256 and size, the manifest inside it, and the `check` report it passed (or not)."""

    zip: str
    sha256: str
    bytes: int
    manifest: dict
    check: CheckReport
    conversion: dict | None = None  # `--from-keras`: config changes, stripped layers, parity in the target runtime
    tta_choice: dict | None = None  # `--tta auto`: the measured scores and the mode chosen (also in the manifest)


@dataclass
class BuildOptions:
    fmt: str = "portable"
    tta: str = "none"
    fp16: bool = False
    batch_size: int = 64
    partial: bool = False  # a run dir still training (or interrupted): export its best weights so far
    auto: AutoOptions | None = None  # `--tta auto`: the validation data the mode is chosen on
    int8: bool = False  # int8 kernels (portable weights.npz) or a quantized model.onnx; agreement in the manifest


def build_submission(source: str | os.PathLike, output: str | os.PathLike, profile: Profile,
                     options: BuildOptions | None = None, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build the zip at `output` from an export dir or a run dir; return its manifest plus the check report."""
    options, log = options or BuildOptions(), log or (lambda _msg: None)
    _validate_options(options)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="cbtool-build-") as tmp:
        export_dir = _export_dir(source, Path(tmp) / "export", options, log)
        export_dir = _int8_export(export_dir, Path(tmp) / "int8", options, log)
        exported = _read_export(export_dir, options.fmt)
        choice = _measure_tta(source, export_dir, exported, profile, options, Path(tmp), log) if options.tta == AUTO else None
        if choice:
            options = dataclasses.replace(options, tta=choice["chosen"])
        files = _payload(export_dir, exported, profile, options)
        manifest = _manifest(source, exported, profile, options, files)
        if choice:
            manifest["tta_choice"] = choice
    result = finish_zip(output, files, manifest, profile, log)
    result.tta_choice = choice
    return result


def _measure_tta(source: Path, export_dir: Path, exported: dict, profile: Profile, options: BuildOptions, scratch: Path,
                 log: Callable[[str], None]) -> dict:
    """`--tta auto`: the zip built with TTA none, its network scored under every mode (toolkit.submission.tta_auto)."""
    from toolkit.submission.tta_auto import choose_for_zip

    if options.auto is None:
        raise SubmissionError("--tta auto needs --tta-data VAL.npz: the validation images the mode is chosen on")
    plain = dataclasses.replace(options, tta="none")
    files = _payload(export_dir, exported, profile, plain)
    files[SUBMISSION_FILES.MANIFEST] = json.dumps(_manifest(source, exported, profile, plain, files)).encode()
    _write_zip(scratch / "tta-none.zip", files)
    return choose_for_zip(scratch / "tta-none.zip", options.auto, log)


def finish_zip(output: str | os.PathLike, files: dict[str, bytes], manifest: dict, profile: Profile,
               log: Callable[[str], None], conversion: dict | None = None) -> BuildResult:
    """Add manifest.json to `files`, write the deterministic zip, and `check` it against the profile."""
    from toolkit.submission.check import check_submission

    files[SUBMISSION_FILES.MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    _write_zip(Path(output), files)
    log(f"wrote {output} ({Path(output).stat().st_size / 2**20:.2f} MiB); checking it against {profile.name}")
    report = check_submission(output, profile)
    return BuildResult(zip=str(output), sha256=sha256_file(output), bytes=Path(output).stat().st_size, manifest=manifest,
                       check=report, conversion=conversion)


def _validate_options(options: BuildOptions) -> None:
    if options.fmt not in FORMATS:
        raise SubmissionError(f"--format: expected one of {', '.join(FORMATS)}, found {options.fmt!r}")
    if options.tta not in (*TTA_CHOICES, AUTO):
        raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, {AUTO}, found {options.tta!r}")
    if int(options.batch_size) < 1:
        raise SubmissionError(f"--batch-size: expected a positive integer, found {options.batch_size}")
    if options.int8 and (options.fp16 or options.fmt == "keras"):
        raise UsageError(f"--int8: {'--fp16 is another weight storage' if options.fp16 else 'model.keras has no int8 form'}"
                         "; use --int8 alone with --format portable or onnx")


def _int8_export(export_dir: Path, scratch: Path, options: BuildOptions, log: Callable[[str], None]) -> Path:
    """With --int8, an export dir whose weights are int8: as is if already, else quantized from float32 into scratch."""
    if ExportDir(export_dir).read_json(ExportDir(export_dir).manifest, SubmissionError).get("int8") and options.fmt != "keras":
        if options.fp16:
            raise SubmissionError(f"{export_dir}: an int8 export (its manifest says so); --fp16 does not apply to it")
        return export_dir
    if not options.int8:
        return export_dir
    from toolkit.export import quantize_export

    return quantize_export(export_dir, options.fmt, scratch, log)


def _export_dir(source: Path, scratch: Path, options: BuildOptions, log: Callable[[str], None]) -> Path:
    """An export dir as is; a run dir (best.weights.h5, no manifest) is exported first into scratch."""
    if ExportDir(source).looks_like():
        return source
    if not RunDir(source).looks_like() and not recover.is_unfinished(source):
        raise SubmissionError(f"{source}: neither an export dir (manifest.json + model_spec.json) nor a run dir "
                              "(best.weights.h5); run `cbtool train` and `cbtool export` first")
    try:
        from toolkit.export import export_run
    except ImportError as exc:
        raise SubmissionError(f"{source} is a run dir and this cbtool cannot export it ({exc}); run `cbtool export` "
                              "and pass the export dir instead") from exc
    log(f"{source} is a run dir: exporting it ({options.fmt}) first")
    export_run(source, scratch, [options.fmt], fp16=options.fp16 and options.fmt == "portable", log=log,
               partial=options.partial, int8=options.int8)
    return scratch


def _read_export(export_dir: Path, fmt: str) -> dict:
    export = ExportDir(export_dir)
    needed = (export.model_spec, export.classes, export.preprocessing, export.weights(fmt))
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        hint = f" (re-export with `cbtool export --format {fmt}`)" if export.weights(fmt).name in missing else ""
        raise SubmissionError(f"{export_dir}: missing {', '.join(missing)}{hint}")
    spec, prep = export.read_json(export.model_spec, SubmissionError), export.read_json(export.preprocessing, SubmissionError)
    classes_file = export.read_json(export.classes, SubmissionError)
    manifest = export.read_json(export.manifest, SubmissionError) if export.manifest.is_file() else {}
    classes = list(classes_file.get("class_names") or spec.get("class_names") or [])
    if len(classes) != int(spec.get("num_classes", len(classes))):
        raise SubmissionError(f"{export.classes}: {len(classes)} class names for num_classes {spec.get('num_classes')}")
    from toolkit.provenance import preprocessing_sha256

    recorded, current = prep.get("source_sha256"), preprocessing_sha256()
    if recorded and recorded != current:
        raise SubmissionError(f"{export.preprocessing}: training used preprocessing source sha256 {recorded[:12]}, "
                              f"but toolkit/preprocessing.py is now {current[:12]}; the submission would not apply the "
                              "preprocessing recorded at training (restore that file or retrain)")
    return {"spec": spec, "classes": classes, "preprocessing": prep, "export_manifest": manifest}


def _payload(export_dir: Path, exported: dict, profile: Profile, options: BuildOptions) -> dict[str, bytes]:
    """The zip's files, in their fixed order: model.py, metadata (2023), the weights file."""
    from toolkit import __version__

    files = {SUBMISSION_FILES.MODEL_PY: render_model_py(exported["spec"], exported["classes"], exported["preprocessing"], profile=profile,
                                         fmt=options.fmt, tta=options.tta, batch_size=options.batch_size,
                                         version=__version__, int8=_int8(exported, options.fmt)).encode("utf-8")}
    if profile.contract.metadata:
        files[SUBMISSION_FILES.METADATA] = b""
    weights = ExportDir(export_dir).weights(options.fmt)
    if options.fmt == "portable":
        files[weights.name] = _deterministic_npz(weights, "float16" if options.fp16 else None)
    else:
        files[weights.name] = weights.read_bytes()
    return files


def _deterministic_npz(path: Path, dtype: str | None) -> bytes:
    """The arrays of an .npz rewritten with fixed entry metadata (np.savez stamps the current time), optionally cast."""
    with np.load(path, allow_pickle=False) as data:
        arrays = [(key, data[key]) for key in data.files]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays:
            if dtype and np.issubdtype(value.dtype, np.floating):
                value = value.astype(dtype)
            body = io.BytesIO()
            np.lib.format.write_array(body, np.ascontiguousarray(value), allow_pickle=False)
            zf.writestr(_info(key + ".npy", zipfile.ZIP_STORED), body.getvalue())
    return buffer.getvalue()


def _manifest(source: Path, exported: dict, profile: Profile, options: BuildOptions, files: dict[str, bytes]) -> dict:
    from toolkit.provenance import preprocessing_sha256
    from toolkit.train.config import run_training_record

    export_versions = exported["export_manifest"].get("versions", {})
    partial = exported["export_manifest"].get("partial")
    return {
        "cbtool_submission": 1,
        "profile": profile_entry(profile),
        "format": options.fmt, "tta": options.tta, "tta_views": TTA_VIEWS[options.tta],
        "fp16": bool(options.fp16 or exported["export_manifest"].get("fp16")),
        "int8": _int8(exported, options.fmt),
        **({"quantization": _quantization(exported["export_manifest"], options.fmt)} if _int8(exported, options.fmt) else {}),
        "batch_size": int(options.batch_size),
        "model": _model_entry(exported["spec"]),
        "classes": exported["classes"],
        "preprocessing": {"sha256": preprocessing_sha256(), "run_sha256": exported["preprocessing"].get("source_sha256"),
                          "input_size": exported["preprocessing"].get("input_size"),
                          "resize": exported["preprocessing"].get("resize", "bilinear")},
        "versions": {"build": build_versions(),
                     "export": {k: v for k, v in export_versions.items() if k in ("tensorflow", "keras", "numpy", "cbtool")}},
        "training": run_training_record(exported["export_manifest"].get("run_dir")),  # augmentation + corruption families
        **({"partial": partial} if partial else {}),  # only an unfinished run's zip carries the key
        **contents_entry(files),
    }


def _int8(exported: dict, fmt: str) -> bool:
    """Whether the zip's weights are int8: an int8 export's weights.npz or model.onnx (its model.keras stays float32)."""
    return bool(exported["export_manifest"].get("int8")) and fmt != "keras"


def _quantization(export_manifest: dict, fmt: str) -> dict:
    """The manifest's `quantization` block: the export's int8 agreement with float32 on its probe images."""
    parity = export_manifest.get("parity", {}).get(fmt, {})
    entry = parity.get("weights_npz", {}) if fmt == "portable" else parity
    keys = ("n", "argmax_agreement", "max_abs_diff", "min_agreement", "bytes_float32", "bytes_int8")
    return {"method": "toolkit/int8.py per-channel symmetric" if fmt == "portable" else entry.get("quantization"),
            **{k: entry.get(k) for k in keys}}


def profile_entry(profile: Profile) -> dict:
    """The manifest's `profile` block."""
    return {"name": profile.name, "contract": profile.contract.key, "packages": list(profile.packages),
            "contract_spec": profile.contract.to_dict()}


def build_versions() -> dict:
    """What built the zip (the manifest's versions.build)."""
    from toolkit.provenance import versions

    return {k: v for k, v in versions().items() if k != "platform"}


def contents_entry(files: dict[str, bytes]) -> dict:
    """The manifest's `embedded` (model.py's blocks by body sha256), `files` and `size_bytes`."""
    from toolkit.submission.render import extract_blocks

    blocks = extract_blocks(files[SUBMISSION_FILES.MODEL_PY].decode("utf-8"))
    return {"embedded": {name: info["sha256_body"] for name, info in blocks.items()},
            "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()},
            "size_bytes": sum(len(d) for d in files.values())}


def _model_entry(spec: dict) -> dict:
    """The manifest's model block: variant, family, input size, classes, the family's architecture fields, and the
    layer whose input is the network's input (what the sandbox captures)."""
    from toolkit.families import family_of, get_variant

    variant, family = get_variant(str(spec.get("variant"))), family_of(str(spec.get("variant")))
    entry = {k: spec.get(k) for k in ("variant", "input_size", "num_classes")}
    entry.update({k: spec.get(k) for k in variant.arch}, family=family.name, input_layer=family.input_layer)
    return entry


def _info(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.compress_type = compress
    info.create_system = 3
    info.external_attr = (0o100000 | FILE_MODE) << 16
    return info


def _write_zip(output: Path, files: dict[str, bytes]) -> None:
    """Entries at the root in the given order, fixed timestamps and modes: same inputs, same bytes."""
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in files.items():
                zf.writestr(_info(name, zipfile.ZIP_DEFLATED), data, compresslevel=6)


def submission_profile(zip_path: str | os.PathLike, name: str | None, profiles_file=None):
    """`name`, else the profile recorded in the zip's manifest.json by build-submission, else an2dl-2024."""
    from toolkit.runtime.profiles import get_profile
    from toolkit.submission_zip import SubmissionZip

    if name is not None:
        return get_profile(name, profiles_file)
    try:
        with SubmissionZip(zip_path) as sub:
            name = (sub.manifest.get("profile") or {}).get("name")
    except SubmissionError:  # an unreadable zip is reported by the command itself
        name = None
    try:
        return get_profile(name or "an2dl-2024", profiles_file)
    except RuntimeProfileError as exc:
        raise RuntimeProfileError(f"{zip_path}: its manifest.json says it was built for profile {name!r}, which is not "
                                  f"built in: pass --profiles-file FILE that defines it, or --profile NAME ({exc})") from None
