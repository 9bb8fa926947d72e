"""Reading and writing training npz files in the AN2DL 2024, AN2DL 2023 and generic schemas.

Every loader returns one normalised in-memory form, `Dataset`: uint8 images (N,H,W,3), int64 labels (N,),
class names, and the row each image had in the original file. It also records how each array was stored and what the
loader converted (`stored`), and the sanity findings that are not fatal (`warnings`) for the commands to print.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import DataError
from toolkit.fsutil import atomic_path

BLOOD_CELL_CLASSES = [
    "Basophil",
    "Eosinophil",
    "Erythroblast",
    "Immature granulocytes",
    "Lymphocyte",
    "Monocyte",
    "Neutrophil",
    "Platelet",
]

# (images key, labels key) per schema, in detection order.
SCHEMAS = {"an2dl2024": ("images", "labels"), "an2dl2023": ("data", "labels"), "generic": ("x", "y")}


@dataclass
class StoredArray:
    """An array as the file stores it (key, dtype, shape) and the conversion the loader applied, if any."""

    key: str
    dtype: str
    shape: list[int]
    converted: str = ""

    @classmethod
    def of(cls, key: str, array: np.ndarray) -> "StoredArray":
        return cls(key, str(array.dtype), [int(d) for d in array.shape])


@dataclass
class Dataset:
    """Images (uint8, N x H x W x 3), integer labels, class names, and each row's index in the source file."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    original_indices: np.ndarray
    schema: str = "generic"
    source: Path | None = None
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one-line sanity findings the commands print and put in JSON
    stored: dict[str, StoredArray] = field(default_factory=dict)  # "images"/"labels" -> how the file stored them

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: np.ndarray) -> "Dataset":
        """Rows `indices` (positions in this dataset), keeping original indices and names."""
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=list(self.class_names),
            original_indices=self.original_indices[indices],
            schema=self.schema,
            source=self.source,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts)}


def load_dataset(path: str | Path, allow_pickle: bool = False, num_classes: int | None = None) -> Dataset:
    """Load and validate a training npz; raise `DataError` naming the file and the problem."""
    path = Path(path)
    archive = open_npz(path, allow_pickle)
    try:
        schema = _detect_schema(path, archive)
        image_key, label_key = SCHEMAS[schema]
        raw_images = read_array(path, archive, image_key, allow_pickle)
        raw_labels = read_array(path, archive, label_key, allow_pickle)
        names = read_array(path, archive, "class_names", allow_pickle) if "class_names" in archive.files else None
        original = read_array(path, archive, "original_indices", allow_pickle) if "original_indices" in archive.files else None
    finally:
        archive.close()
    warnings: list[str] = []
    images, note = _to_uint8(path, image_key, raw_images, warnings)
    labels, class_names = _validate_labels(path, label_key, raw_labels, images.shape[0], names, num_classes, schema)
    if original is None:
        original = np.arange(images.shape[0], dtype=np.int64)
    elif original.shape != (images.shape[0],):
        raise DataError(f"{path}: 'original_indices' has shape {original.shape}, expected ({images.shape[0]},)")
    stored = {"images": _stored(image_key, raw_images, images, note), "labels": _stored(label_key, raw_labels, labels)}
    return Dataset(images, labels, class_names, original.astype(np.int64), schema, path, warnings=warnings, stored=stored)


def _stored(key: str, raw: np.ndarray, loaded: np.ndarray, note: str = "") -> StoredArray:
    """How `raw` was stored, and the conversion (values, dtype, shape) that produced `loaded`."""
    record = StoredArray.of(key, raw)
    steps = [note] if note else []
    if raw.dtype.kind in "OUS":
        steps.append(f"names mapped to {loaded.dtype} class indices")
    elif raw.dtype != loaded.dtype and not note:
        steps.append(f"converted to {loaded.dtype}")
    if raw.shape != loaded.shape:
        steps.append(f"reshaped to {tuple(loaded.shape)}")
    record.converted = ", ".join(steps)
    return record


def open_npz(path: Path, allow_pickle: bool):
    """The npz archive at `path` (close it after use); one-line DataErrors for a missing, damaged or non-npz file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: expected an .npz file, found a directory")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(6)
        found = "a single .npy array" if head == b"\x93NUMPY" else "not a zip archive"
        raise DataError(f"{path}: expected an .npz archive (a zip of arrays), found {found}")
    try:
        archive = np.load(path, allow_pickle=allow_pickle)
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise DataError(f"{path}: cannot read the npz archive ({_short(exc)}); the file may be truncated") from exc
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: expected an .npz archive, found a single array")
    return archive


def _detect_schema(path: Path, archive) -> str:
    keys = set(archive.files)
    for schema, (image_key, label_key) in SCHEMAS.items():
        if image_key in keys and label_key in keys:
            return schema
    expected = " or ".join(f"'{i}'+'{l}'" for i, l in SCHEMAS.values())
    found = ", ".join(f"'{k}'" for k in sorted(keys)) or "none"
    raise DataError(f"{path}: expected keys {expected}; found keys {found}")


def read_array(path: Path, archive, key: str, allow_pickle: bool) -> np.ndarray:
    """One array of an open archive; pickled (object) arrays are refused unless `allow_pickle`."""
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(
                f"{path}: array '{key}' is stored as Python objects, and loading it would unpickle (run code from) "
                f"the file; pass --allow-pickle only if you trust its source (the AN2DL 2023 public_data.npz needs it)"
            ) from exc
        raise DataError(f"{path}: cannot read array '{key}' ({_short(exc)}); the file may be truncated") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read array '{key}' ({_short(exc)}); the file may be truncated") from exc


def validate_images(path: Path, key: str, images: np.ndarray, warnings: list[str] | None = None) -> np.ndarray:
    """`images` as (N, H, W, 3) uint8 in 0-255, or a DataError naming the file, key, what was found, the likely cause
    and the fix; findings that are not fatal are appended to `warnings`."""
    return _to_uint8(path, key, images, warnings if warnings is not None else [])[0]


def _to_uint8(path: Path, key: str, images: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, str]:
    """The uint8 (N,H,W,3) images and the value conversion applied ("" when none beyond the dtype)."""
    _check_shape(path, key, images)
    if images.dtype.kind == "b" or images.dtype.kind not in "iuf":
        raise DataError(f"{path}: '{key}' has dtype {images.dtype}, expected uint8 or float pixel values 0-255")
    note = ""
    if images.dtype == np.uint8:
        out = images
    elif images.dtype.kind == "f":
        out, note = _float_to_uint8(path, key, images, warnings)
    else:
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: '{key}' pixel values must lie in [0, 255]; found range [{lo}, {hi}]")
        out = images.astype(np.uint8)
    if not note and int(out.max()) == 1:
        # x/255 cast to an integer type truncates every pixel to 0 (or 1 for white): the image is gone, not rescalable
        raise DataError(f"{path}: '{key}' ({images.dtype}) holds only the values 0 and 1, expected raw pixels 0-255; "
                        f"likely cause: images divided by 255 and then stored as integers (or rounded), which lost them; "
                        f"fix: save the original uint8 pixels without dividing by 255")
    return out, note


def _check_shape(path: Path, key: str, images: np.ndarray) -> None:
    if images.dtype == object:
        raise DataError(f"{path}: '{key}' holds Python objects, expected a numeric array of shape (N,H,W,3)")
    if images.ndim == 3:
        raise DataError(f"{path}: '{key}' has shape {images.shape}, expected (N,H,W,3); found 1 channel (grayscale?)")
    if images.ndim != 4:
        raise DataError(f"{path}: '{key}' has shape {images.shape}, expected (N,H,W,3)")
    if images.shape[1] == 3 and images.shape[-1] != 3:
        raise DataError(f"{path}: '{key}' has shape {images.shape}, expected channels last (N,H,W,3); found channels "
                        f"first (N,3,H,W), the PyTorch layout; fix: images = images.transpose(0, 2, 3, 1) before saving")
    if images.shape[-1] != 3:
        what = {1: "1 channel (grayscale)", 4: "4 channels (RGBA?)"}.get(images.shape[-1], f"{images.shape[-1]} channels")
        raise DataError(f"{path}: '{key}' has shape {images.shape}, expected 3 channels (RGB); found {what}")
    if images.shape[0] == 0:
        raise DataError(f"{path}: '{key}' is empty, expected at least one image")


def _float_to_uint8(path: Path, key: str, images: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, str]:
    finite = np.isfinite(images)
    if not finite.all():
        bad = int(np.argmin(finite.reshape(len(images), -1).all(axis=1)))
        kind = "NaN" if np.isnan(images[bad]).any() else "inf"
        raise DataError(f"{path}: '{key}' contains {kind} values (first in image {bad}); expected pixel values 0-255")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 255:
        raise DataError(f"{path}: '{key}' float pixel values must lie in [0, 255]; found range [{lo:g}, {hi:g}]"
                        + _range_hint(lo, hi))
    if hi <= 1.0 and np.any((images > 0) & (images < 1)):
        # Some datasets are stored as floats in [0, 1]; the grader feeds 0-255, so rescale rather than refuse.
        warnings.append(f"{path}: '{key}' holds floats in [0, 1] (max {hi:g}), expected raw pixels 0-255 (what the "
                        f"grader feeds and the model expects); likely cause: saved after x/255; cbtool multiplied "
                        f"by 255 and rounded to uint8; fix: store the raw uint8 pixels")
        return np.rint(images * 255.0).astype(np.uint8), "scaled from 0-1 by 255 and rounded to uint8"
    rounded = np.rint(images)
    off = np.abs(images - rounded) > 1e-3
    if off.any():
        bad = int(np.argmax(off.reshape(len(images), -1).any(axis=1)))
        raise DataError(f"{path}: '{key}' holds non-integral pixel values (first in image {bad}); expected whole numbers 0-255")
    return rounded.astype(np.uint8), ""


def _range_hint(lo: float, hi: float) -> str:
    """The likely cause and fix for float pixels outside [0, 255], from the range's shape."""
    if lo >= -1.0 and hi <= 1.0:
        return ("; likely cause: normalised to [-1, 1] (x/127.5 - 1, preprocess_input's 'tf' mode); "
                "fix: store raw pixels, e.g. np.rint((x + 1) * 127.5).astype(np.uint8)")
    if lo < 0 and hi <= 5.0:
        return ("; likely cause: standardised per channel ((x/255 - mean)/std, preprocess_input's 'torch' mode); "
                "fix: store the raw uint8 pixels")
    if -130.0 <= lo < 0 and hi <= 155.0:
        return ("; likely cause: ImageNet mean subtracted (preprocess_input's 'caffe' mode, often BGR too); "
                "fix: store the raw uint8 RGB pixels")
    return ""


def _validate_labels(path, key, labels, n, names, num_classes, schema):
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"{path}: '{key}' has shape {labels.shape} (one-hot?), expected (N,) or (N,1) class labels")
    elif labels.ndim != 1:
        raise DataError(f"{path}: '{key}' has shape {labels.shape}, expected (N,) or (N,1)")
    if labels.shape[0] != n:
        raise DataError(f"{path}: {n} images but {labels.shape[0]} labels in '{key}'; expected one label per image")
    if labels.dtype.kind in "OUS":
        return _string_labels(path, key, labels, names)
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or np.any(labels != np.rint(labels)):
            raise DataError(f"{path}: '{key}' holds non-integer values; expected class indices")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{path}: '{key}' has dtype {labels.dtype}, expected integer class indices or strings")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise DataError(f"{path}: '{key}' holds negative class index {int(labels.min())}; expected indices >= 0")
    class_names = [str(s) for s in names] if names is not None else None
    k = len(class_names) if class_names is not None else num_classes
    if k is not None and labels.max() >= k:
        raise DataError(f"{path}: '{key}' holds class index {int(labels.max())}, expected indices 0-{k - 1} ({k} classes)")
    if class_names is None:
        k = k or int(labels.max()) + 1
        class_names = BLOOD_CELL_CLASSES[:] if schema == "an2dl2024" and k == 8 else [str(i) for i in range(k)]
    return labels, class_names


def _string_labels(path, key, labels, names):
    values = np.array([str(v) for v in labels.tolist()])
    class_names = [str(s) for s in names] if names is not None else sorted(set(values.tolist()))
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(values.tolist()) - lookup.keys())
    if unknown:
        raise DataError(f"{path}: '{key}' holds label {unknown[0]!r}, expected one of {class_names}")
    return np.array([lookup[v] for v in values.tolist()], dtype=np.int64), class_names


def save_dataset(dataset: Dataset, path: str | Path, schema: str | None = None) -> Path:
    """Write `dataset` atomically in its schema (or `schema`), with class names and original indices."""
    path = Path(path)
    if dataset.source is not None and path.resolve() == Path(dataset.source).resolve():
        raise DataError(f"{path}: refusing to overwrite the input file; choose another output path")
    schema = schema or dataset.schema
    image_key, label_key = SCHEMAS[schema]
    arrays = {"class_names": np.array(dataset.class_names), "original_indices": dataset.original_indices.astype(np.int64)}
    if schema == "an2dl2024":
        arrays.update(images=dataset.images, labels=dataset.labels.reshape(-1, 1).astype(np.int64))
    elif schema == "an2dl2023":
        names = np.array(dataset.class_names)
        arrays.update(data=dataset.images.astype(np.float32), labels=names[dataset.labels])
    else:
        arrays.update(x=dataset.images, y=dataset.labels.astype(np.int64))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
