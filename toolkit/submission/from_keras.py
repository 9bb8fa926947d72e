"""`build-submission --from-keras MODEL --preprocess SPEC`: a model trained in a notebook (a `.keras` saved by any
Keras 3, an `.h5` saved by Keras 2) made into a grader-proof submission for a profile.

The steps, each proved or refused in one line:
1. read the model's config before loading it: a keras_cv/keras_hub layer or an unregistered custom class is refused
   by name; augmentation layers are refused unless `--strip-augmentation` (they only act while training);
2. load it here (Keras 3; a Keras 2 `.h5` through Keras 3's legacy loader, its config first cleared of arguments
   this Keras does not know) and compute its probabilities on probe images with SPEC applied;
3. strip augmentation (rebuild the graph without it) and prove the probabilities unchanged;
4. re-express the config for the profile's Keras (keras_config.py; every change reported), rebuild, load the
   weights, save in that Keras' native format and predict, all inside the profile's runtime (keras_target.py), and
   require the same probabilities within 1e-5 and the same argmax;
5. render model.py (format "foreign": load the saved file; SPEC's source and toolkit/tta.py embedded), zip, check.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import SubmissionError
from toolkit.fsutil import sha256_file
from toolkit.runtime.profiles import Profile
from toolkit.submission import keras_config
from toolkit.submission.keras_target import PARITY_ATOL, Conversion, convert, target_keras_of

FOREIGN_FORMAT = "foreign"
STRIP_ATOL = 0.0  # removing a layer that is the identity at inference must not move a single bit


@dataclass
class FromKerasOptions:
    preprocess: str
    strip_augmentation: bool = False
    data: str | os.PathLike | None = None
    allow_pickle: bool = False
    tta: str = "none"
    batch_size: int = 64
    probes: int = 16
    force: bool = False  # write the zip even above the profile's size limit


@dataclass
class Original:
    """The notebook's model as loaded here, with what its file says about itself."""

    path: Path
    model: object
    config: dict
    saved_keras: str
    kind: str  # "keras" | "h5"
    sha256: str
    load_changes: list[dict] = field(default_factory=list)  # a Keras 2 .h5's config edits so this Keras loads it


# --- 1-2: read and load the original ------------------------------------------------------------------------------


def read_config(path: Path) -> tuple[dict, str, str]:
    """(model config, the Keras version that saved it, "keras" | "h5") without building the model."""
    if path.is_dir():
        raise SubmissionError(f"{path}: a SavedModel folder carries no Keras config to re-express; in the notebook, save "
                              "with model.save('model.keras') (Keras 3) or model.save('model.h5') (Keras 2) instead")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                meta = json.loads(archive.read("metadata.json")) if "metadata.json" in archive.namelist() else {}
            return config, str(meta.get("keras_version", "3")), "keras"
        import h5py

        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
        text = attrs["model_config"]
        version = attrs.get("keras_version", "2")
        as_str = (lambda v: v.decode() if isinstance(v, bytes) else str(v))
        return json.loads(as_str(text)), as_str(version), "h5"
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SubmissionError(f"{path}: expected a whole model saved as .keras (Keras 3) or .h5 (Keras 2) with its "
                              f"config; found none readable ({type(exc).__name__}: {exc})") from exc


def load_original(path: str | os.PathLike, strip: bool) -> Original:
    """Load MODEL here after refusing what no grader can load; augmentation needs `strip`."""
    import keras

    path = Path(path)
    config, saved, kind = read_config(path)
    keras_config.refuse_foreign(config, str(path), lambda cls: hasattr(keras.layers, cls))
    augmentation = keras_config.augmentation_layers(config)
    if augmentation and not strip:
        listed = ", ".join(f"{p} ({c})" for p, c in augmentation)
        raise SubmissionError(f"{path}: holds augmentation layer(s) {listed}; they only act while training: pass "
                              "--strip-augmentation to remove them (cbtool proves the outputs unchanged)")
    model, changes = _load_h5(path, config, saved) if kind == "h5" and saved.startswith("2") else (_load(path, path, saved), [])
    return Original(path, model, config, saved, kind, sha256_file(path), [c.to_dict() for c in changes])


def _load(path: Path, original: Path, saved: str):
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; one line naming both versions
        last = (str(exc).strip().splitlines() or [""])[-1][:300]
        raise SubmissionError(f"{original}: saved by Keras {saved}, cannot be loaded by this Keras {keras.__version__}: "
                              f"{type(exc).__name__}: {last}") from exc


def _load_h5(path: Path, config: dict, saved: str) -> tuple[object, list]:
    """A Keras 2 .h5 through Keras 3's legacy loader, its config first cleared of arguments this Keras rejects
    (e.g. DepthwiseConv2D's `groups`) and its nested-model references renumbered: rewritten into a scratch copy,
    weights untouched."""
    import h5py

    from toolkit.runtime.profiles import local_profile

    cleared, changes = keras_config.drop_unknown(keras_config.unshift_keras2(config), target_keras_of(local_profile()).accepted)
    with tempfile.TemporaryDirectory(prefix="cbtool-h5-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as handle:
            handle.attrs["model_config"] = json.dumps(cleared)
        return _load(copy, path, saved), changes


# --- probes and the reference -------------------------------------------------------------------------------------


def probe_images(model, options: FromKerasOptions, input_size: int | None) -> tuple[np.ndarray, list[str] | None]:
    """Raw probe images (the first `probes` of --data, else seeded random uint8 at the model's input size) and the
    data's class names when --data has them."""
    if options.data is not None:
        from toolkit.data.io import load_dataset

        data = load_dataset(options.data, allow_pickle=options.allow_pickle)
        return data.images[: options.probes], list(data.class_names)
    shape = tuple(model.input_shape[1:3])
    size = (shape if None not in shape else (input_size or 96,) * 2)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(options.probes, *size, 3), dtype=np.uint8), None


def predict_probs(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs at inference (training=False), float64, in bounded batches."""
    outs = [np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0).astype(np.float64)


def _check_input(model, x: np.ndarray, spec, path: Path) -> None:
    """One image input whose shape the spec's output fits."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise SubmissionError(f"{path}: expected one image input and one output, found {len(model.inputs)} input(s) and "
                              f"{len(model.outputs)} output(s)")
    want = tuple(model.input_shape[1:])
    if len(want) != 3 or any(w is not None and w != f for w, f in zip(want, x.shape[1:])):
        raise SubmissionError(f"{path}: --preprocess {spec.text} yields images of shape {x.shape[1:]}, the model takes "
                              f"{want} (add resize:SIZE to the spec, or pass --data with images of that size)")


def _check_output(reference: np.ndarray, path: Path) -> None:
    """Class scores (n, C >= 2): predict returns their argmax."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        raise SubmissionError(f"{path}: expected one score per class, shape (n, C >= 2); found outputs of shape "
                              f"{reference.shape} (a single sigmoid unit? use Dense(2, activation='softmax'))")


# --- 3: strip augmentation ----------------------------------------------------------------------------------------


def strip_augmentation(model, x: np.ndarray, reference: np.ndarray, path: Path) -> tuple[object, list[dict], float]:
    """The model rebuilt without its augmentation layers, weights copied by layer; proved equal on `x`."""
    import keras

    config, removed = keras_config.strip_augmentation(json.loads(model.to_json()))
    stripped = keras.models.model_from_json(json.dumps(config))
    for layer in stripped.layers:
        weights = model.get_layer(layer.name).get_weights()
        if weights:
            layer.set_weights(weights)
    diff = float(np.max(np.abs(predict_probs(stripped, x, len(x)) - reference)))
    if diff > STRIP_ATOL:
        names = ", ".join(c.path for c in removed)
        raise SubmissionError(f"{path}: removing {names} changes the outputs at inference (max abs diff {diff:.3g}); "
                              "such a layer is not pass-through at inference and cannot be stripped")
    return stripped, [c.to_dict() for c in removed], diff


# --- 5: the submission --------------------------------------------------------------------------------------------


def build_from_keras(model_path: str | os.PathLike, output: str | os.PathLike, profile: Profile,
                     options: FromKerasOptions, log: Callable[[str], None] | None = None):
    """Build the zip at `output` from a notebook's model file; return the BuildResult (with `conversion`)."""
    from toolkit.preprocess_spec import parse_spec
    from toolkit.submission.build import finish_zip

    log = log or (lambda _msg: None)
    _validate(options)
    spec = parse_spec(options.preprocess)
    original = load_original(model_path, options.strip_augmentation)
    log(f"loaded {original.path.name} (saved by Keras {original.saved_keras}); probing with --preprocess {spec.text}")
    raw, names = probe_images(original.model, options, spec.input_size)
    x = spec.apply(raw)
    _check_input(original.model, x, spec, original.path)
    reference = predict_probs(original.model, x, options.batch_size)
    _check_output(reference, original.path)
    model, removed, strip_diff = original.model, [], None
    if keras_config.augmentation_layers(json.loads(original.model.to_json())):
        model, removed, strip_diff = strip_augmentation(original.model, x, reference, original.path)
        log(f"stripped {len(removed)} augmentation layer(s); outputs unchanged (max abs diff {strip_diff:g})")
    with tempfile.TemporaryDirectory(prefix="cbtool-from-keras-") as tmp:
        try:
            native, conversion = convert(model, profile, x, reference, Path(tmp), log)
        except SubmissionError as exc:
            raise SubmissionError(f"{original.path}: {exc}") from exc
        conversion.removed_layers, conversion.strip_max_abs_diff = removed, strip_diff
        conversion.load_changes = original.load_changes
        classes = _classes(names, reference.shape[1])
        files = _payload(original, model, native, spec, classes, profile, options, conversion)
    manifest = _manifest(original, model, spec, classes, profile, options, conversion, files)
    return finish_zip(output, files, manifest, profile, log, conversion=conversion.to_dict(), force=options.force)


def _validate(options: FromKerasOptions) -> None:
    from toolkit.submission.render import TTA_CHOICES

    if options.tta not in TTA_CHOICES:
        raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, found {options.tta!r}")
    if int(options.batch_size) < 1 or int(options.probes) < 1:
        raise SubmissionError(f"--batch-size and probes: expected positive integers, found {options.batch_size}, "
                              f"{options.probes}")


def _classes(names: list[str] | None, n: int) -> list[str]:
    """The data's class names when they count as many as the model's outputs, else "0".."n-1"."""
    return list(names) if names and len(names) == n else [str(i) for i in range(n)]


def _input_size(model) -> int | None:
    size = model.input_shape[1]
    return int(size) if size is not None else None


def _payload(original: Original, model, native: Path, spec, classes: list[str], profile: Profile,
             options: FromKerasOptions, conversion: Conversion) -> dict[str, bytes]:
    """model.py, metadata (when the contract wants it), the converted model file."""
    from toolkit import __version__
    from toolkit.artifacts import SUBMISSION_FILES
    from toolkit.submission.render import render_foreign_model_py

    source = {"file": original.path.name, "sha256": original.sha256, "saved_keras": original.saved_keras,
              "target_keras": conversion.target_keras}
    text = render_foreign_model_py(source, classes, spec, weights_file=conversion.native_file,
                                   input_size=_input_size(model), profile=profile, tta=options.tta,
                                   batch_size=options.batch_size, version=__version__, atol=PARITY_ATOL)
    files = {SUBMISSION_FILES.MODEL_PY: text.encode("utf-8")}
    if profile.contract.metadata:
        files[SUBMISSION_FILES.METADATA] = b""
    files[conversion.native_file] = native.read_bytes()
    return files


def _manifest(original: Original, model, spec, classes: list[str], profile: Profile, options: FromKerasOptions,
              conversion: Conversion, files: dict[str, bytes]) -> dict:
    from toolkit.submission.build import build_versions, contents_entry, profile_entry
    from toolkit.tta import TTA_VIEWS

    first = next((layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"), None)
    return {
        "cbtool_submission": 1, "profile": profile_entry(profile), "format": FOREIGN_FORMAT,
        "tta": options.tta, "tta_views": TTA_VIEWS[options.tta], "fp16": False, "batch_size": int(options.batch_size),
        "model": {"family": FOREIGN_FORMAT, "source": original.path.name, "source_sha256": original.sha256,
                  "source_kind": original.kind, "input_size": _input_size(model), "num_classes": len(classes),
                  "input_layer": first, "file": conversion.native_file},
        "classes": classes, "preprocess_spec": spec.to_dict(), "conversion": conversion.to_dict(),
        "versions": {"build": build_versions(), "saved_keras": original.saved_keras,
                     "target_keras": conversion.target_keras},
        **contents_entry(files),
    }


