"""`build-submission --tta auto`: the TTA mode chosen by measuring the submission's own network on validation data.

The network is the one the zip ships (rebuilt from a cbtool-built zip in this process: portable/keras through
`toolkit.gradcam.load_network`, onnx through onnxruntime), fed exactly as model.py feeds it: the one preprocessing
definition on batches of the zip's batch size, `toolkit.tta.tta_views` of each batch, softmax summed over the views,
argmax. Every mode is scored on the clean images and on a small seeded corruption subset (`toolkit.corruptions`),
and `toolkit.tta_choice.choose_tta` picks: the same rule `simulate --compare-tta` applies.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import SubmissionError, UsageError, did_you_mean
from toolkit.tta import TTA_VIEWS, tta_views

AUTO = "auto"
# The shifted score: a few families of different kinds (blur, compression, contrast) at a middle severity; each one
# costs as much as the clean set again, so the default stays small.
DEFAULT_SHIFT = ("defocus_blur", "jpeg", "contrast_down")
SHIFT_SEVERITY = 3
DEFAULT_IMAGES = 500  # enough to resolve a few tenths of a point, at 8 forward passes per image for d4

Forward = Callable[[np.ndarray], np.ndarray]  # float32 (n, S, S, 3) preprocessed view -> softmax (n, K)


@dataclass
class AutoOptions:
    """What `--tta auto` measures on: the validation npz, how many of its images, which corruption families."""

    data: Path
    images: int = DEFAULT_IMAGES
    shift: tuple[str, ...] = DEFAULT_SHIFT
    seed: int = 0
    allow_pickle: bool = False


def parse_shift(text: str | None) -> tuple[str, ...]:
    """`--tta-shift`: comma-separated corruption families, or `none` for clean accuracy only (a UsageError if unknown)."""
    from toolkit.corruptions import FAMILIES

    if text is None:
        return DEFAULT_SHIFT
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in ((), ("none",)):
        return ()
    for name in names:
        if name not in FAMILIES:
            raise UsageError(f"--tta-shift: unknown corruption family {name!r}{did_you_mean(name, FAMILIES)}; "
                             f"expected some of {', '.join(FAMILIES)}, or none")
    return names


def choose_for_zip(zip_path: str | Path, options: AutoOptions, log: Callable[[str], None] | None = None) -> dict:
    """The `tta_choice` record for the network of a cbtool-built zip (built with TTA none) on `options.data`."""
    from toolkit.fsutil import sha256_file
    from toolkit.submission_zip import SubmissionZip

    log = log or (lambda _msg: None)
    with SubmissionZip(zip_path) as sub:
        manifest = sub.manifest
    images, labels = _validation(options, manifest)
    prep = manifest.get("preprocessing") or {}
    size, resize = int(prep.get("input_size") or 96), str(prep.get("resize") or "bilinear")
    log(f"--tta auto: scoring {', '.join(TTA_VIEWS)} on {len(images)} images of {options.data}"
        + (f" and {len(options.shift)} corrupted copies" if options.shift else ""))
    started = time.perf_counter()
    forward = load_forward(zip_path, str(manifest.get("format")))
    scores = measure_tta(forward, images, labels, input_size=size, resize=resize,
                         batch_size=int(manifest.get("batch_size") or 64), shift=options.shift, seed=options.seed)
    return tta_record(scores, options, sha256_file(options.data), len(images), time.perf_counter() - started)


def tta_record(scores: dict, options: AutoOptions, data_sha256: str, n: int, seconds: float) -> dict:
    """The manifest's `tta_choice`: the chosen mode, choose_tta's reason, every mode's scores, the data they came from."""
    from toolkit.tta_choice import choose_tta

    chosen, reason = choose_tta(scores)
    return {"chosen": chosen, "reason": reason, "scores": scores, "data": {"path": str(options.data), "sha256": data_sha256},
            "n": int(n), "shift": {"families": list(options.shift), "severity": SHIFT_SEVERITY, "seed": options.seed},
            "seconds": round(seconds, 2)}


def measure_tta(forward: Forward, images: np.ndarray, labels: np.ndarray, *, input_size: int, resize: str,
                batch_size: int, shift: tuple[str, ...] = (), seed: int = 0) -> dict[str, dict]:
    """{mode: {"clean", "shifted" (mean over `shift` at SHIFT_SEVERITY, None without), "views"}} for raw uint8 `images`."""
    from toolkit.corruptions import corrupt

    clean = _accuracies(forward, images, labels, input_size, resize, batch_size)
    shifted = [_accuracies(forward, corrupt(images, family, SHIFT_SEVERITY, seed), labels, input_size, resize, batch_size)
               for family in shift]
    return {mode: {"clean": clean[mode], "shifted": float(np.mean([s[mode] for s in shifted])) if shifted else None,
                   "views": TTA_VIEWS[mode]} for mode in TTA_VIEWS}


def _accuracies(forward: Forward, images: np.ndarray, labels: np.ndarray, input_size: int, resize: str,
                batch_size: int) -> dict[str, float]:
    """Each mode's accuracy, predicting as model.py does; a view that two modes share is run once."""
    from toolkit.preprocessing import preprocess

    correct = dict.fromkeys(TTA_VIEWS, 0)
    for start in range(0, len(images), batch_size):
        batch = preprocess(images[start:start + batch_size], input_size, resize)
        y, seen = labels[start:start + batch_size], {}
        for mode in TTA_VIEWS:
            keys = []
            for view in tta_views(batch, mode):
                keys.append(hashlib.blake2b(view.tobytes(), digest_size=16).digest())
                if keys[-1] not in seen:
                    seen[keys[-1]] = np.asarray(forward(view), dtype=np.float64)
            probs = sum(seen[key] for key in keys)  # model.py's sum of softmax over the views, in the same order
            correct[mode] += int(np.sum(np.argmax(probs, axis=1) == y))
    return {mode: correct[mode] / max(len(images), 1) for mode in TTA_VIEWS}


def load_forward(zip_path: str | Path, fmt: str) -> Forward:
    """The zip's network as a function of one preprocessed view, as model.py's `_forward` calls it."""
    if fmt == "onnx":
        return _onnx_forward(zip_path)
    from toolkit.gradcam import load_network

    net = load_network(zip_path).model

    def forward(x: np.ndarray) -> np.ndarray:
        y = net(x, training=False)
        return np.asarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.float64)

    return forward


def _onnx_forward(zip_path: str | Path) -> Forward:
    from toolkit.artifacts import weights_file
    from toolkit.gradcam import MAX_WEIGHTS_MB  # numpy-only module: the one cap on a weights entry read into memory
    from toolkit.submission_zip import SubmissionZip

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SubmissionError(f"{zip_path}: --tta auto on an onnx submission needs onnxruntime here ({exc})") from exc
    with SubmissionZip(zip_path) as sub:
        model = sub.read(weights_file("onnx"), max_bytes=MAX_WEIGHTS_MB * 2**20)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0], dtype=np.float64)


def _validation(options: AutoOptions, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The validation images and their labels as the submission's class indices; a seeded sample of `options.images`."""
    from toolkit.data.io import load_dataset
    from toolkit.runtime.heldout import match_classes

    data = load_dataset(options.data, allow_pickle=options.allow_pickle)
    labels = match_classes(data, options.data, manifest, None).labels
    if len(data) > options.images:
        idx = np.sort(np.random.default_rng(options.seed).choice(len(data), size=options.images, replace=False))
        return data.images[idx], labels[idx]
    return data.images, labels


def describe(record: dict) -> str:
    """One line: the choice, each mode's clean (and shifted) accuracy, and what it was measured on."""
    def row(mode: str, s: dict) -> str:
        shifted = f"/{100 * s['shifted']:.1f}%" if s.get("shifted") is not None else ""
        return f"{mode} {100 * s['clean']:.1f}%{shifted}"

    what = "clean/shifted" if record["shift"]["families"] else "clean"
    scores = ", ".join(row(m, s) for m, s in record["scores"].items())
    return (f"TTA auto: chose {record['chosen']} ({what}: {scores}; {record['n']} images of "
            f"{Path(record['data']['path']).name}, {record['seconds']:.1f} s)")
