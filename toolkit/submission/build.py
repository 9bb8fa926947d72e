"""`cbtool build-submission`: an export dir (or a run dir, exported first) -> a deterministic submission zip."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import SubmissionError
from toolkit.fsutil import atomic_path, sha256_file
from toolkit.runtime.profiles import Profile
from toolkit.submission.render import TTA_CHOICES, TTA_VIEWS, WEIGHTS_FILES, render_model_py

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
FORMATS = tuple(WEIGHTS_FILES)
EXPORT_FILES = ("model_spec.json", "classes.json", "preprocessing.json")


@dataclass
class BuildOptions:
    fmt: str = "portable"
    tta: str = "none"
    fp16: bool = False
    batch_size: int = 64


def build_submission(source: str | os.PathLike, output: str | os.PathLike, profile: Profile,
                     options: BuildOptions | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Build the zip at `output` from an export dir or a run dir; return its manifest plus the check report."""
    from toolkit.submission.check import check_submission

    options, log = options or BuildOptions(), log or (lambda _msg: None)
    _validate_options(options)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="cbtool-build-") as tmp:
        export_dir = _export_dir(source, Path(tmp) / "export", options, log)
        exported = _read_export(export_dir, options.fmt)
        files = _payload(export_dir, exported, profile, options)
        manifest = _manifest(source, exported, profile, options, files)
        files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        _write_zip(Path(output), files)
    log(f"wrote {output} ({Path(output).stat().st_size / 2**20:.2f} MiB); checking it against {profile.name}")
    report = check_submission(output, profile)
    return {"zip": str(output), "sha256": sha256_file(output), "bytes": Path(output).stat().st_size,
            "manifest": manifest, "check": report}


def _validate_options(options: BuildOptions) -> None:
    if options.fmt not in FORMATS:
        raise SubmissionError(f"--format: expected one of {', '.join(FORMATS)}, found {options.fmt!r}")
    if options.tta not in TTA_CHOICES:
        raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, found {options.tta!r}")
    if int(options.batch_size) < 1:
        raise SubmissionError(f"--batch-size: expected a positive integer, found {options.batch_size}")


def _export_dir(source: Path, scratch: Path, options: BuildOptions, log: Callable[[str], None]) -> Path:
    """An export dir as is; a run dir (best.weights.h5, no manifest) is exported first into scratch."""
    if (source / "manifest.json").is_file() and (source / "model_spec.json").is_file():
        return source
    if not (source / "best.weights.h5").is_file():
        raise SubmissionError(f"{source}: neither an export dir (manifest.json + model_spec.json) nor a run dir "
                              "(best.weights.h5); run `cbtool train` and `cbtool export` first")
    try:
        from toolkit.export import export_run
    except ImportError as exc:
        raise SubmissionError(f"{source} is a run dir and this cbtool cannot export it ({exc}); run `cbtool export` "
                              "and pass the export dir instead") from exc
    log(f"{source} is a run dir: exporting it ({options.fmt}) first")
    export_run(source, scratch, [options.fmt], fp16=options.fp16 and options.fmt == "portable", log=log)
    return scratch


def _read_export(export_dir: Path, fmt: str) -> dict:
    missing = [n for n in (*EXPORT_FILES, WEIGHTS_FILES[fmt]) if not (export_dir / n).is_file()]
    if missing:
        hint = f" (re-export with `cbtool export --format {fmt}`)" if WEIGHTS_FILES[fmt] in missing else ""
        raise SubmissionError(f"{export_dir}: missing {', '.join(missing)}{hint}")
    try:
        data = {n.split(".")[0]: json.loads((export_dir / n).read_text(encoding="utf-8")) for n in (*EXPORT_FILES, "manifest.json")
                if (export_dir / n).is_file()}
    except ValueError as exc:
        raise SubmissionError(f"{export_dir}: unreadable JSON ({exc})") from exc
    classes = list(data["classes"].get("class_names") or data["model_spec"].get("class_names") or [])
    if len(classes) != int(data["model_spec"].get("num_classes", len(classes))):
        raise SubmissionError(f"{export_dir}/classes.json: {len(classes)} class names for num_classes "
                              f"{data['model_spec'].get('num_classes')}")
    from toolkit.provenance import preprocessing_sha256

    recorded, current = data["preprocessing"].get("source_sha256"), preprocessing_sha256()
    if recorded and recorded != current:
        raise SubmissionError(f"{export_dir}/preprocessing.json: training used preprocessing source sha256 {recorded[:12]}, "
                              f"but toolkit/preprocessing.py is now {current[:12]}; the submission would not apply the "
                              "preprocessing recorded at training (restore that file or retrain)")
    return {"spec": data["model_spec"], "classes": classes, "preprocessing": data["preprocessing"],
            "export_manifest": data.get("manifest", {})}


def _payload(export_dir: Path, exported: dict, profile: Profile, options: BuildOptions) -> dict[str, bytes]:
    """The zip's files, in their fixed order: model.py, metadata (2023), the weights file."""
    from toolkit import __version__

    files = {"model.py": render_model_py(exported["spec"], exported["classes"], exported["preprocessing"], profile=profile,
                                         fmt=options.fmt, tta=options.tta, batch_size=options.batch_size,
                                         version=__version__).encode("utf-8")}
    if int(profile.contract) == 2023:
        files["metadata"] = b""
    weights = export_dir / WEIGHTS_FILES[options.fmt]
    if options.fmt == "portable":
        files["weights.npz"] = _deterministic_npz(weights, "float16" if options.fp16 else None)
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
    from toolkit.provenance import preprocessing_sha256, versions
    from toolkit.submission.render import extract_blocks

    blocks = extract_blocks(files["model.py"].decode("utf-8"))
    export_versions = exported["export_manifest"].get("versions", {})
    return {
        "cbtool_submission": 1,
        "profile": {"name": profile.name, "contract": int(profile.contract), "packages": list(profile.packages)},
        "format": options.fmt, "tta": options.tta, "tta_views": TTA_VIEWS[options.tta],
        "fp16": bool(options.fp16 or exported["export_manifest"].get("fp16")),
        "batch_size": int(options.batch_size),
        "model": {k: exported["spec"].get(k) for k in ("variant", "input_size", "num_classes", "depths", "dims")},
        "classes": exported["classes"],
        "preprocessing": {"sha256": preprocessing_sha256(), "run_sha256": exported["preprocessing"].get("source_sha256"),
                          "input_size": exported["preprocessing"].get("input_size"),
                          "resize": exported["preprocessing"].get("resize", "bilinear")},
        "embedded": {name: info["sha256_body"] for name, info in blocks.items()},
        "versions": {"build": {k: v for k, v in versions().items() if k != "platform"},
                     "export": {k: v for k, v in export_versions.items() if k in ("tensorflow", "keras", "numpy", "cbtool")}},
        "files": {name: {"sha256": sha256_text_bytes(data), "bytes": len(data)} for name, data in files.items()},
        "size_bytes": sum(len(d) for d in files.values()),
    }


def sha256_text_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


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

    if name is None:
        try:
            name = (read_manifest(zip_path).get("profile") or {}).get("name")
        except (OSError, ValueError, zipfile.BadZipFile):  # an unreadable zip is reported by the command itself
            name = None
    return get_profile(name or "an2dl-2024", profiles_file)


def read_manifest(zip_path: str | os.PathLike) -> dict:
    """The manifest.json of a cbtool-built zip ({} when it has none)."""
    with zipfile.ZipFile(zip_path) as zf:
        if "manifest.json" not in zf.namelist():
            return {}
        return json.loads(zf.read("manifest.json"))

