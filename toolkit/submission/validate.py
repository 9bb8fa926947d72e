"""`cbtool validate-preprocessing`: prove a submission feeds its network the same bytes training did.

The submission's own predict() runs in the sandbox (the one loader) with capture on; the tensor reaching the
network's first layer is compared byte for byte with `toolkit.preprocessing.preprocess` applied here, as in
training, to the same probe images. With TTA the identity view (the first call of every batch) is compared.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import Profile


def validate_preprocessing(zip_path: str | os.PathLike, run_dir: str | os.PathLike, profile: Profile, *,
                           data: str | os.PathLike | None = None, n_images: int = 16,
                           log: Callable[[str], None] | None = None) -> dict:
    """Run the submission with capture, compare with training's preprocessing; return a JSON-able report."""
    from toolkit.runtime.sandbox import run_submission

    zip_path, run_dir = Path(zip_path), Path(run_dir)
    prep = _read_json(run_dir / "preprocessing.json")
    size, resize = int(prep.get("input_size", 96)), str(prep.get("resize", "bilinear"))
    images = _probe_images(run_dir, data, n_images)
    inputs = probe_inputs(images)
    model_py, manifest = _zip_texts(zip_path)
    views = int(manifest.get("tta_views") or 1)
    outcome = run_submission(zip_path, profile, inputs, capture_input=True, log=log)
    report = {"ok": False, "zip": str(zip_path), "run": str(run_dir), "profile": profile.name, "input_size": size,
              "resize": resize, "tta_views": views, "capture_target": outcome.capture_target,
              "source": source_hashes(model_py, prep), "inputs": [], "diagnoses": [], "failure": None,
              "timing": outcome.timing}
    if outcome.failure is not None and not any(outcome.captured_calls.values()):
        report["failure"] = outcome.failure.to_dict()
        report["diagnoses"] = _diagnose_failure(outcome.failure.message, size)
        return report
    for name, x in inputs.items():
        calls = outcome.captured_calls.get(name) or []
        report["inputs"].append(compare_input(name, x, calls[::views], size, resize))
    report["diagnoses"] = _unique(d for item in report["inputs"] for d in item["diagnosis"])
    if outcome.failure is not None:
        report["failure"] = outcome.failure.to_dict()
    source_ok = report["source"]["match"] is not False
    if not source_ok:
        report["diagnoses"].append(report["source"]["message"])
    report["ok"] = source_ok and report["failure"] is None and all(item["identical"] for item in report["inputs"])
    return report


def probe_inputs(images: np.ndarray) -> dict[str, np.ndarray]:
    """The probe set: the images as uint8 and float32, edge cases all-0 / all-255, and float32 with fractions."""
    h, w = images.shape[1:3]
    rng = np.random.default_rng(0)
    fractional = np.clip(images.astype(np.float32) + rng.uniform(-0.5, 0.5, images.shape).astype(np.float32), 0, 255)
    return {
        "probe_uint8": images.astype(np.uint8),
        "probe_float32": images.astype(np.float32),
        "zeros_uint8": np.zeros((2, h, w, 3), np.uint8),
        "full_uint8": np.full((2, h, w, 3), 255, np.uint8),
        "fractional_float32": fractional,
    }


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


def render(report: dict) -> str:
    """Human text for a validation report."""
    head = f"{report['zip']} vs {report['run']} in {report['profile']} (capture: {report['capture_target']})"
    if report["ok"]:
        n = len(report["inputs"])
        return f"ok: preprocessing byte-identical to training on {n} probe sets; {report['source']['message']}\n  {head}"
    lines = [f"MISMATCH: {head}"]
    for item in report["inputs"]:
        if item["identical"]:
            lines.append(f"  {item['input']:<20} identical")
            continue
        diff = item["first_difference"]
        where = f" first difference at {diff['index']}: training {diff['expected']!r}, submission {diff['found']!r}" if diff else ""
        lines.append(f"  {item['input']:<20} differs;{where}")
    lines += [f"  diagnosis: {d}" for d in report["diagnoses"]]
    if report["failure"]:
        lines.append(f"  the submission failed: [{report['failure']['kind']}] {report['failure']['message']}")
    return "\n".join(lines)


def _first_difference(expected: np.ndarray, found: np.ndarray) -> dict | None:
    if expected.shape != found.shape:
        return None
    bad = np.argwhere(expected.astype(np.float64) != found.astype(np.float64))
    if not len(bad):  # same values, different dtype
        return {"index": [0] * expected.ndim, "expected": float(expected.flat[0]), "found": float(found.flat[0])}
    index = tuple(int(i) for i in bad[0])
    return {"index": list(index), "expected": float(expected[index]), "found": float(found[index])}


def _probe_images(run_dir: Path, data: str | os.PathLike | None, n: int) -> np.ndarray:
    if data is not None:
        from toolkit.data.io import load_dataset

        images = load_dataset(data, allow_pickle=True).images
    else:
        path = run_dir / "probe.npz"
        if not path.is_file():
            raise SubmissionError(f"{run_dir}: no probe.npz; pass --data with images to probe")
        with np.load(path, allow_pickle=False) as probe:
            images = probe["images"]
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise SubmissionError(f"probe images: expected (N, H, W, 3) with N > 0, found {images.shape}")
    return np.asarray(images[:n])


def _zip_texts(zip_path: Path) -> tuple[str, dict]:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            model_py = zf.read("model.py").decode("utf-8", "replace") if "model.py" in names else ""
            manifest = json.loads(zf.read("manifest.json")) if "manifest.json" in names else {}
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise SubmissionError(f"{zip_path}: not a readable submission zip ({exc})") from exc
    return model_py, manifest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SubmissionError(f"{path}: missing (is --run a training run or export dir?)") from exc
    except ValueError as exc:
        raise SubmissionError(f"{path}: not valid JSON ({exc})") from exc


def _unique(items) -> list[str]:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
