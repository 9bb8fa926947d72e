"""`cbtool build-submission`: an export dir (or a run dir, exported first) -> a deterministic submission zip.

Several sources make an ensemble (`build_ensemble`): one model.py (templates/ensemble.py.tmpl) averaging the members'
softmax, each member with its own preprocessing, input size and TTA; the manifest lists every member."""

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

from toolkit.artifacts import FORMATS, SUBMISSION_FILES, ExportDir, RunDir, member_name, member_weights_file
from toolkit.errors import RuntimeProfileError, SubmissionError, UsageError
from toolkit.fsutil import atomic_path, sha256_bytes, sha256_file
from toolkit.results import Result
from toolkit.runtime.profiles import Profile
from toolkit.submission.check import CheckReport
from toolkit.submission.render import TTA_CHOICES, render_ensemble_model_py, render_model_py
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
    int8: bool = False  # int8 kernels (portable weights.npz) or a quantized model.onnx; agreement in the manifest
    member_tta: tuple[str, ...] | None = None  # an ensemble: one TTA mode per member (else `tta` for every member)
    weights: tuple[float, ...] | None = None  # an ensemble: the members' weights (normalised to sum 1; default equal)
    force: bool = False  # write the zip even above the profile's size limit (the check then warns)


def build_submission(source: str | os.PathLike, output: str | os.PathLike, profile: Profile,
                     options: BuildOptions | None = None, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build the zip at `output` from an export dir or a run dir; return its manifest plus the check report."""
    options, log = options or BuildOptions(), log or (lambda _msg: None)
    _validate_options(options)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="cbtool-build-") as tmp:
        export_dir = _export_dir(source, Path(tmp) / "export", options, log)
        export_dir, exported = _export_for_zip(export_dir, Path(tmp) / "int8", options, log)
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


def build_ensemble(sources: list, output: str | os.PathLike, profile: Profile, options: BuildOptions | None = None,
                   log: Callable[[str], None] | None = None) -> BuildResult:
    """Build one zip whose model.py averages the softmax of every source's network (export or run dirs, families
    may be mixed): member i's weights are `member_weights_file(fmt, i)`, the manifest's `members` list each one."""
    options, log = options or BuildOptions(), log or (lambda _msg: None)
    sources = [Path(s) for s in sources]
    _validate_options(options)
    modes, weights = _member_settings(sources, options)
    with tempfile.TemporaryDirectory(prefix="cbtool-build-") as tmp:
        members = []
        for index, source in enumerate(sources, 1):
            log(f"member {index} of {len(sources)}: {source}")
            export_dir = _export_dir(source, Path(tmp) / f"export{index}", options, log)
            members.append((source, *_export_for_zip(export_dir, Path(tmp) / f"int8_{index}", options, log)))
        int8 = any(_int8(exported, options.fmt) for _s, _e, exported in members)
        classes = _common_classes(members)
        entries = [{"name": member_name(i), "spec": exported["spec"],
                    "input_size": int(exported["preprocessing"]["input_size"]),
                    "resize": str(exported["preprocessing"].get("resize", "bilinear")),
                    "weights_file": member_weights_file(options.fmt, i), "tta": mode, "weight": weight}
                   for i, ((_s, _e, exported), mode, weight) in enumerate(zip(members, modes, weights), 1)]
        from toolkit import __version__

        files = {SUBMISSION_FILES.MODEL_PY: render_ensemble_model_py(entries, classes, profile=profile, fmt=options.fmt,
                                                                     batch_size=options.batch_size, version=__version__,
                                                                     int8=int8).encode("utf-8")}
        if profile.contract.metadata:
            files[SUBMISSION_FILES.METADATA] = b""
        for entry, (_source, export_dir, _exported) in zip(entries, members):
            files[entry["weights_file"]] = _weights_bytes(export_dir, options)
        manifest = _ensemble_manifest(members, entries, classes, profile, options, files)
    return finish_zip(output, files, manifest, profile, log, force=options.force)


def check_options(sources: list, options: BuildOptions) -> None:
    """Refuse bad options (and, for several sources, a bad ensemble) before any slow work such as `--plan`."""
    _validate_options(options)
    if len(sources) > 1:
        _member_settings([Path(s) for s in sources], options)


def _member_settings(sources: list[Path], options: BuildOptions) -> tuple[list[str], list[float]]:
    """Each member's TTA mode and weight (normalised), refusing what cannot make an ensemble."""
    if len(sources) < 2:
        raise UsageError("an ensemble needs at least two SOURCE dirs")
    seen = {}
    for source in sources:
        key = source.resolve()
        if key in seen:
            raise UsageError(f"{source}: given twice as an ensemble member; to weigh it more, use --weights")
        seen[key] = source
    if options.partial:
        raise UsageError("--partial builds one unfinished run; export it with `cbtool export --partial` and pass the "
                         "export dir as a member")
    modes = list(options.member_tta or [options.tta] * len(sources))
    if AUTO in modes:
        raise UsageError("--tta auto chooses one network's mode; for an ensemble pass one mode per member "
                         "(--tta d4,flip,none)")
    if len(modes) != len(sources):
        raise UsageError(f"--tta: expected one mode or one per member ({len(sources)}), found {len(modes)}: "
                         f"{','.join(modes)}")
    raw = list(options.weights or [1.0] * len(sources))
    if len(raw) != len(sources):
        raise UsageError(f"--weights: expected one weight per member ({len(sources)}), found {len(raw)}")
    if any(not np.isfinite(w) or w < 0 for w in raw) or sum(raw) <= 0:
        raise UsageError(f"--weights: expected non-negative numbers with a positive sum, found {raw}")
    total = float(sum(raw))
    return modes, [float(w) / total for w in raw]


def _common_classes(members: list) -> list[str]:
    """The class names every member predicts, in the same order (the softmax columns are averaged position by
    position)."""
    first_source, _e, first = members[0]
    for source, _export, exported in members[1:]:
        if exported["classes"] != first["classes"]:
            raise SubmissionError(f"{source}: predicts classes {exported['classes']}, but {first_source} predicts "
                                  f"{first['classes']}: ensemble members must share class names in the same order")
    return list(first["classes"])


def _ensemble_manifest(members: list, entries: list[dict], classes: list[str], profile: Profile, options: BuildOptions,
                       files: dict[str, bytes]) -> dict:
    from toolkit.provenance import preprocessing_sha256
    from toolkit.train.config import recorded_families, run_training_record

    listed = []
    for entry, (source, _export, exported) in zip(entries, members):
        export_manifest = exported["export_manifest"]
        listed.append({
            # the source dir's name only: the full path as typed would make identical inputs give other bytes
            "name": entry["name"], "source": Path(source).resolve().name, "weight": entry["weight"], "tta": entry["tta"],
            "tta_views": TTA_VIEWS[entry["tta"]], "model": _model_entry(exported["spec"]),
            "preprocessing": _preprocessing_entry(exported),
            "weights_file": entry["weights_file"], "weights_sha256": sha256_bytes(files[entry["weights_file"]]),
            "model_spec_sha256": sha256_bytes(json.dumps(exported["spec"], sort_keys=True).encode()),
            # the run's probe images (export copies them unchanged): what tells two runs of one spec apart
            "probe_sha256": sha256_file(ExportDir(_export).probe) if ExportDir(_export).probe.is_file() else None,
            "versions": {k: v for k, v in export_manifest.get("versions", {}).items() if k in ("tensorflow", "keras", "numpy", "cbtool")},
            "training": run_training_record(export_manifest.get("run_dir")),
            "int8": _int8(exported, options.fmt),
            **({"quantization": _quantization(export_manifest, options.fmt)} if _int8(exported, options.fmt) else {}),
            **({"partial": export_manifest["partial"]} if export_manifest.get("partial") else {}),
        })
    records = [m["training"] for m in listed]
    families = [recorded_families(r) for r in records]
    layers = {m["model"]["input_layer"] for m in listed}
    return {
        "cbtool_submission": 1,
        "profile": profile_entry(profile),
        "format": options.fmt, "tta": None, "tta_views": None,  # per member
        "fp16": bool(options.fp16 or any(e["export_manifest"].get("fp16") for _s, _e, e in members)),
        "int8": any(m["int8"] for m in listed),  # each member's own `int8` and `quantization` say which
        "batch_size": int(options.batch_size),
        "model": {"ensemble": len(listed), "num_classes": len(classes),
                  "input_layer": layers.pop() if len(layers) == 1 else None},
        "members": listed,
        "classes": classes,
        "preprocessing": {"sha256": preprocessing_sha256()},
        "versions": {"build": build_versions()},
        # the shift suite marks a corruption family seen in training when any member drew it
        "training": (None if any(f is None for f in families) else
                     {"corruption_families": sorted({x for f in families for x in f}), "members": records}),
        **contents_entry(files),
    }


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
    if fmt == "portable" and not manifest.get("int8"):
        helps.append("--int8 (~0.25x for kernels)")
    elif fmt == "onnx" and not manifest.get("int8"):
        helps.append("--int8 (onnx quantizes only the Dense/MatMul weights: ~0.3x for ConvNeXt, little for EfficientNetV2)")
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
    if options.int8 and (options.fp16 or options.fmt == "keras"):
        raise UsageError(f"--int8: {'--fp16 is another weight storage' if options.fp16 else 'model.keras has no int8 form'}"
                         "; use --int8 alone with --format portable or onnx")


def _export_for_zip(export_dir: Path, scratch: Path, options: BuildOptions, log: Callable[[str], None]) -> tuple[Path, dict]:
    """The export dir the zip is built from and what it holds: read (its files checked) before --int8 quantizes it,
    and read again only when quantizing made another dir."""
    exported = _read_export(export_dir, options.fmt)
    quantized = _int8_export(export_dir, scratch, options, log)
    return (export_dir, exported) if quantized == export_dir else (quantized, _read_export(quantized, options.fmt))


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
    files[ExportDir(export_dir).weights(options.fmt).name] = _weights_bytes(export_dir, options)
    return files


def _weights_bytes(export_dir: Path, options: BuildOptions) -> bytes:
    """The export's weights file of the chosen format as the zip carries it."""
    weights = ExportDir(export_dir).weights(options.fmt)
    if options.fmt == "portable":
        return _deterministic_npz(weights, "float16" if options.fp16 else None)
    return weights.read_bytes()


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
        "preprocessing": {"sha256": preprocessing_sha256(), **_preprocessing_entry(exported)},
        "versions": {"build": build_versions(),
                     "export": {k: v for k, v in export_versions.items() if k in ("tensorflow", "keras", "numpy", "cbtool")}},
        "training": run_training_record(exported["export_manifest"].get("run_dir")),  # augmentation + corruption families
        **({"partial": partial} if partial else {}),  # only an unfinished run's zip carries the key
        **contents_entry(files),
    }


def _preprocessing_entry(exported: dict) -> dict:
    """What training's preprocessing.json says the network is fed: the run's source sha256, input size, resize."""
    prep = exported["preprocessing"]
    return {"run_sha256": prep.get("source_sha256"), "input_size": prep.get("input_size"),
            "resize": prep.get("resize", "bilinear")}


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
