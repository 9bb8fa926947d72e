"""`cbtool validate-preprocessing`: prove a submission feeds its network the same bytes training did.

The submission's own predict() runs in the sandbox (the one loader) with capture on; the tensor reaching the
network's first layer is compared byte for byte with `toolkit.preprocessing.preprocess` applied here, as in
training, to the same probe images. With TTA the identity view (the first call of every batch) is compared.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.errors import SubmissionError
from toolkit.results import Result
from toolkit.runtime.profiles import Profile
from toolkit.tta import IDENTITY_VIEW, TTA_VIEWS


@dataclass
class ValidationReport(Result):
    """What validate-preprocessing found: `ok` when every probe input reached the network byte-identical."""

    ok: bool
    zip: str
    run: str
    profile: str
    input_size: int
    resize: str
    tta_views: int
    capture_target: str | None
    source: dict
    inputs: list[dict] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    failure: dict | None = None
    timing: dict = field(default_factory=dict)


def validate_preprocessing(zip_path: str | os.PathLike, run_dir: str | os.PathLike, profile: Profile, *,
                           data: str | os.PathLike | None = None, n_images: int = 16, allow_pickle: bool = False,
                           log: Callable[[str], None] | None = None) -> ValidationReport:
    """Run the submission with capture, compare with training's preprocessing; return the report."""
    from toolkit.runtime.sandbox import run_submission
    from toolkit.submission_zip import SubmissionZip

    zip_path, run = Path(zip_path), RunDir(run_dir)
    prep = run.read_json(run.preprocessing, SubmissionError)
    size, resize = int(prep.get("input_size", 96)), str(prep.get("resize", "bilinear"))
    images, labels = _probe_images(run, data, n_images, allow_pickle)
    inputs = probe_inputs(images, profile.contract.dtypes)
    with SubmissionZip(zip_path) as sub:
        model_py, manifest = sub.model_py or "", sub.manifest
    views = int(manifest.get("tta_views") or TTA_VIEWS.get(str(manifest.get("tta")), 1))
    outcome = run_submission(zip_path, profile, inputs, capture_input=True, log=log, fit_data=(images, labels))
    report = ValidationReport(ok=False, zip=str(zip_path), run=str(run), profile=profile.name, input_size=size,
                              resize=resize, tta_views=views, capture_target=outcome.capture_target,
                              source=source_hashes(model_py, prep), timing=outcome.timing)
    if outcome.failure is not None and not any(outcome.captured_calls.values()):
        report.failure = outcome.failure.to_dict()
        report.diagnoses = _diagnose_failure(outcome.failure.message, size)
        return report
    for name, x in inputs.items():
        calls = outcome.captured_calls.get(name) or []
        report.inputs.append(compare_input(name, x, calls[IDENTITY_VIEW::views], size, resize))
    report.diagnoses = _unique(d for item in report.inputs for d in item["diagnosis"])
    if outcome.failure is not None:
        report.failure = outcome.failure.to_dict()
    source_ok = report.source["match"] is not False
    if not source_ok:
        report.diagnoses.append(report.source["message"])
    report.ok = source_ok and report.failure is None and all(item["identical"] for item in report.inputs)
    return report


def probe_inputs(images: np.ndarray, dtypes: tuple[str, ...] = ("uint8", "float32")) -> dict[str, np.ndarray]:
    """The probe set in each dtype the contract feeds: the images, all-0 and all-255 edge cases, and (float) values
    with fractions; a 2023-style float32-only contract is never fed uint8."""
    h, w = images.shape[1:3]
    rng = np.random.default_rng(0)
    out = {}
    for dtype in dtypes:
        out[f"probe_{dtype}"] = images.astype(dtype)
    first = dtypes[0]
    out[f"zeros_{first}"] = np.zeros((2, h, w, 3), first)
    out[f"full_{first}"] = np.full((2, h, w, 3), 255, first)
    floats = [d for d in dtypes if d.startswith("float")]
    if floats:
        noise = rng.uniform(-0.5, 0.5, images.shape)
        out[f"fractional_{floats[0]}"] = np.clip(images.astype(np.float64) + noise, 0, 255).astype(floats[0])
    return out


def compare_input(name: str, x: np.ndarray, calls: list[np.ndarray], size: int, resize: str) -> dict:
    """Compare the identity-view captures for one input with training's preprocessing of it."""
    from toolkit.preprocessing import preprocess

    expected = preprocess(x, size, resize)
    item = {"input": name, "dtype": str(x.dtype), "shape": list(x.shape), "identical": False, "first_difference": None,
            "diagnosis": []}
    if not calls:
        item["diagnosis"].append("no tensor reached the network's first layer (capture found nothing to wrap?)")
        return item
    shapes = {c.shape[1:] for c in calls}
    if len(shapes) != 1:
        item["diagnosis"].append(f"the network received batches of different image shapes {sorted(shapes)}")
        return item
    found = np.concatenate(calls, axis=0)
    item.update(found_shape=list(found.shape), found_dtype=str(found.dtype))
    if found.shape == expected.shape and found.dtype == expected.dtype and found.tobytes() == expected.tobytes():
        item["identical"] = True
        return item
    item["first_difference"] = _first_difference(expected, found)
    item["diagnosis"] = diagnose(x, expected, found, size, resize)
    return item


def diagnose(x: np.ndarray, expected: np.ndarray, found: np.ndarray, size: int, resize: str) -> list[str]:
    """Name the usual causes of a mismatch: /255, /127.5-1, BGR, resize method or size, dtype."""
    from toolkit.preprocessing import RESIZE_METHODS, preprocess

    if found.shape[0] != expected.shape[0]:
        return [f"batch: the network received {found.shape[0]} images for {expected.shape[0]} inputs (an extra view or a dropped batch)"]
    if found.shape[1:3] != expected.shape[1:3]:
        return [f"resize size: training fed {size}x{size}, the submission fed {found.shape[1]}x{found.shape[2]}"]
    if found.shape != expected.shape:
        return [f"shape: training fed {expected.shape}, the submission fed {found.shape}"]
    out = []
    if found.dtype != expected.dtype:
        out.append(f"dtype: the network received {found.dtype}, training fed float32")
    f = found.astype(np.float64)
    scalings = {"": lambda e: e, "an extra /255 (ConvNeXt normalises inside the network: values must stay 0-255)": lambda e: e / 255.0,
                "an extra /127.5 - 1 (ConvNeXt normalises inside the network: values must stay 0-255)": lambda e: e / 127.5 - 1.0}
    for label, scale in scalings.items():
        for flip in (False, True):
            e = scale(expected.astype(np.float64))
            e = e[..., ::-1] if flip else e
            if (label or flip) and np.allclose(f, e, rtol=1e-5, atol=1e-5):
                causes = [c for c in (label, "channels reversed (RGB <-> BGR)" if flip else "") if c]
                return out + causes
    for other in RESIZE_METHODS:
        if other != resize and np.allclose(f, preprocess(x, size, other), atol=1e-4):
            return out + [f"resize method: the submission resized with {other!r}, training used {resize!r}"]
    e = expected.astype(np.float64)
    for label, fn in (("truncated", np.trunc), ("rounded", np.round), ("floored", np.floor)):
        before = preprocess(fn(np.asarray(x, np.float64)).astype(np.float32), size, resize)  # cast on the way in
        if np.array_equal(f, fn(e)) or np.array_equal(f, before):
            return out + [f"dtype: values {label} to integers (a cast to uint8/int in predict; training keeps float32 fractions)"]
    if np.allclose(f, e.astype(np.float16).astype(np.float64), atol=0, rtol=0):
        return out + ["dtype: values rounded to float16 precision (training feeds float32)"]
    diff = np.abs(f - e)
    return out + [f"values differ (max abs diff {diff.max():.4g}, mean {diff.mean():.4g}), not one of the usual causes "
                  "(/255, /127.5-1, BGR, resize, dtype): compare predict() with toolkit/preprocessing.py"]


_FOUND_SHAPE = re.compile(r"found shape=\((?:None|\d+), (\d+), (\d+), (\d+)\)")


def _diagnose_failure(message: str, size: int) -> list[str]:
    """Nothing was captured: the network rejected its input (e.g. Keras' shape check) or predict failed earlier."""
    match = _FOUND_SHAPE.search(message)
    if match and (int(match.group(1)), int(match.group(2))) != (size, size):
        return [f"resize size: training fed {size}x{size}, the submission fed {match.group(1)}x{match.group(2)} "
                f"(the network rejected it: {message})"]
    return [f"the submission failed before any tensor reached its network: {message}"]


def source_hashes(model_py: str, prep: dict) -> dict:
    """The embedded preprocessing block's sha256 vs the run's recorded source_sha256."""
    from toolkit.provenance import preprocessing_sha256
    from toolkit.submission.render import extract_blocks

    block = extract_blocks(model_py).get("preprocessing.py")
    run_sha = prep.get("source_sha256")
    info = {"embedded_sha256": block["sha256_body"] if block else None, "marker_sha256": block["sha256_marker"] if block else None,
            "run_sha256": run_sha, "toolkit_sha256": preprocessing_sha256(), "match": None, "message": ""}
    if block is None:
        info["message"] = "model.py has no embedded toolkit/preprocessing.py block: source hashes not compared"
    elif run_sha is None:
        info["message"] = "the run's preprocessing.json records no source_sha256: source hashes not compared"
    else:
        info["match"] = block["sha256_body"] == run_sha == block["sha256_marker"]
        info["message"] = ("embedded preprocessing source matches training's" if info["match"] else
                           f"source: the embedded preprocessing block hashes to {block['sha256_body'][:12]} (marker says "
                           f"{block['sha256_marker'][:12]}), training recorded {run_sha[:12]}: the block was edited or comes from another cbtool")
    return info


def render(report: ValidationReport) -> str:
    """Human text for a validation report."""
    head = f"{report.zip} vs {report.run} in {report.profile} (capture: {report.capture_target})"
    if report.ok:
        return f"ok: preprocessing byte-identical to training on {len(report.inputs)} probe sets; {report.source['message']}\n  {head}"
    lines = [f"MISMATCH: {head}"]
    for item in report.inputs:
        if item["identical"]:
            lines.append(f"  {item['input']:<20} identical")
            continue
        diff = item["first_difference"]
        where = f" first difference at {diff['index']}: training {diff['expected']!r}, submission {diff['found']!r}" if diff else ""
        lines.append(f"  {item['input']:<20} differs;{where}")
    lines += [f"  diagnosis: {d}" for d in report.diagnoses]
    if report.failure:
        lines.append(f"  the submission failed: [{report.failure['kind']}] {report.failure['message']}")
    return "\n".join(lines)


def _first_difference(expected: np.ndarray, found: np.ndarray) -> dict | None:
    if expected.shape != found.shape:
        return None
    bad = np.argwhere(expected.astype(np.float64) != found.astype(np.float64))
    if not len(bad):  # same values, different dtype
        return {"index": [0] * expected.ndim, "expected": float(expected.flat[0]), "found": float(found.flat[0])}
    index = tuple(int(i) for i in bad[0])
    return {"index": list(index), "expected": float(expected[index]), "found": float(found[index])}


def _probe_images(run: RunDir, data: str | os.PathLike | None, n: int, allow_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first n images of --data (refusing pickled arrays unless allowed), else the run's probe.npz; with labels
    (zeros where none are known) for a contract that calls fit(X, y)."""
    if data is not None:
        from toolkit.data.io import load_dataset

        dataset = load_dataset(data, allow_pickle=allow_pickle)
        images, labels = dataset.images, dataset.labels
    else:
        if not run.probe.is_file():
            raise SubmissionError(f"{run.path}: no {run.probe.name}; pass --data with images to probe")
        with np.load(run.probe, allow_pickle=False) as probe:
            images = probe["images"]
            labels = probe["labels"] if "labels" in probe.files else np.zeros(len(images), np.int64)
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise SubmissionError(f"probe images: expected (N, H, W, 3) with N > 0, found {images.shape}")
    return np.asarray(images[:n]), np.asarray(labels[:n]).reshape(-1).astype(np.int64)


def _unique(items) -> list[str]:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
