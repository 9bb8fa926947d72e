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
from toolkit.errors import RuntimeProfileError, SubmissionError
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
    budget: dict | None = None  # the zip's bytes against the profile's size limit (`size_budget`)
    plan: dict | None = None  # `--plan N`: the time plan made before building (toolkit.submission.plan.TimePlan)


@dataclass
class BuildOptions:
    fmt: str = "portable"
    tta: str = "none"
    fp16: bool = False
    batch_size: int = 64
    partial: bool = False  # a run dir still training (or interrupted): export its best weights so far
    auto: AutoOptions | None = None  # `--tta auto`: the validation data the mode is chosen on
    force: bool = False  # write the zip even above the profile's size limit (the check then warns)


def build_submission(source: str | os.PathLike, output: str | os.PathLike, profile: Profile,
                     options: BuildOptions | None = None, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build the zip at `output` from an export dir or a run dir; return its manifest plus the check report."""
    options, log = options or BuildOptions(), log or (lambda _msg: None)
    _validate_options(options)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="cbtool-build-") as tmp:
        export_dir = _export_dir(source, Path(tmp) / "export", options, log)
        exported = _read_export(export_dir, options.fmt)
        choice = _measure_tta(source, export_dir, exported, profile, options, Path(tmp), log) if options.tta == AUTO else None
        if choice:
            options = dataclasses.replace(options, tta=choice["chosen"])
        files = _payload(export_dir, exported, profile, options)
        manifest = _manifest(source, exported, profile, options, files)
        if choice:
            manifest["tta_choice"] = choice
    result = finish_zip(output, files, manifest, profile, log, force=options.force)
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
               log: Callable[[str], None], conversion: dict | None = None, force: bool = False) -> BuildResult:
    """Add manifest.json to `files`, write the deterministic zip, and `check` it against the profile. Above the
    profile's size limit nothing is left at `output` (SubmissionError naming what would help) unless `force`."""
    from toolkit.submission.check import check_submission

    files[SUBMISSION_FILES.MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cbtool-zip-", dir=Path(output).parent) as tmp:
        staged = Path(tmp) / Path(output).name
        _write_zip(staged, files)
        budget = size_budget(staged.stat().st_size, profile, forced=force)
        if budget["over"] and not force:
            raise SubmissionError(over_size_message(output, budget, manifest))
        os.replace(staged, output)
    log(f"wrote {output} ({Path(output).stat().st_size / 2**20:.2f} MiB); checking it against {profile.name}")
    if budget["over"]:
        log(f"--force: wrote {output} although it is over the {budget['limit_mb']:g} MiB this profile ({profile.name}) assumes")
    report = check_submission(output, profile)
    if budget["forced"]:  # the user chose to go over: check's too_large finding is the warning it now is
        for issue in report.issues:
            issue.severity = "warning" if issue.code == "too_large" else issue.severity
        report.errors = sum(i.severity == "error" for i in report.issues)
        report.warnings, report.ok = len(report.issues) - report.errors, report.errors == 0
    return BuildResult(zip=str(output), sha256=sha256_file(output), bytes=Path(output).stat().st_size, manifest=manifest,
                       check=report, conversion=conversion, budget=budget)


def size_budget(size: int, profile: Profile, forced: bool = False) -> dict:
    """The zip's `size` in bytes against the upload limit the profile assumes (its size_limit_mb, in MiB)."""
    limit = float(profile.size_limit_mb) * 2**20  # MiB, as check's too_large compares
    return {"bytes": int(size), "limit_bytes": int(limit), "limit_mb": float(profile.size_limit_mb), "fraction": size / limit,
            "over": size > limit, "forced": bool(forced and size > limit), "profile": profile.name}


def describe_budget(budget: dict) -> str:
    """'zip 41.2 MiB of the 150 MiB this profile (an2dl-2024) assumes' (+ the --force note)."""
    line = (f"zip {budget['bytes'] / 2**20:.1f} MiB of the {budget['limit_mb']:g} MiB this profile ({budget['profile']}) "
            f"assumes ({100 * budget['fraction']:.0f}%)")
    return line + ("; OVER the limit, written because of --force" if budget["forced"] else "")


def over_size_message(output, budget: dict, manifest: dict) -> str:
    """The refusal: size, limit, and what would help here (fp16/int8 when not used, fewer members, a smaller variant)."""
    helps = []
    fmt = manifest.get("format")
    if fmt == "portable" and not manifest.get("fp16") and not manifest.get("int8"):
        helps.append("--fp16 (~0.5x)")
    if fmt in ("portable", "onnx") and not manifest.get("int8"):
        helps.append("--int8 (~0.25x for kernels)")
    members = manifest.get("members") or []
    if len(members) > 1:
        helps.append(f"fewer members (now {len(members)})")
    variant = (manifest.get("model") or {}).get("variant")
    helps.append(f"a smaller variant than {variant}" if variant else "a smaller model")
    return (f"{output}: the zip would be {budget['bytes'] / 2**20:.1f} MiB, over the {budget['limit_mb']:g} MiB upload limit "
            f"this profile ({budget['profile']}) assumes; not written. Try {', '.join(helps)}, or --force to write it anyway")


def _validate_options(options: BuildOptions) -> None:
    if options.fmt not in FORMATS:
        raise SubmissionError(f"--format: expected one of {', '.join(FORMATS)}, found {options.fmt!r}")
    if options.tta not in (*TTA_CHOICES, AUTO):
        raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, {AUTO}, found {options.tta!r}")
    if int(options.batch_size) < 1:
        raise SubmissionError(f"--batch-size: expected a positive integer, found {options.batch_size}")


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
               partial=options.partial)
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
                                         version=__version__).encode("utf-8")}
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
