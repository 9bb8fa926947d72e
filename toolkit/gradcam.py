"""Grad-CAM on the held-out images a submission got wrong: where the network looked when it chose the wrong class.

The network is rebuilt in the parent process from a cbtool-built zip (its manifest names the variant, the format
and the preprocessing): `portable` zips rebuild the family's architecture and load `weights.npz`, `keras` zips load
`model.keras`. An ONNX zip, or a zip cbtool did not build, has no TensorFlow network to differentiate, so the
report says so instead. Heavy imports (TensorFlow, Keras) stay inside the functions.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import SubmissionError

SHEET_IMAGES = 16  # misclassified images on the sheet: a screenful, and Grad-CAM for each stays under a second
PREDICT_MAX = 512  # held-out images the parent predicts itself when the result carries no predictions
MAX_WEIGHTS_MB = 2048  # a weights entry larger than this is not read into memory
NEEDS_CBTOOL_ZIP = "Grad-CAM needs a cbtool-built zip in the portable or keras format (the network rebuilt in TensorFlow)"


@dataclass
class Network:
    """A zip's network rebuilt in this process, with what its model.py does before calling it."""

    model: object
    input_size: int
    resize: str
    about: str = ""  # an ensemble: which member's network this is

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """The float32 tensor model.py feeds the network for `images` (the one preprocessing definition)."""
        from toolkit.preprocessing import preprocess

        return preprocess(images, self.input_size, self.resize)


@dataclass
class Sheet:
    """What the Grad-CAM sheet shows: `path` (None when it could not be drawn), counts, and a note for the report."""

    path: str | None = None
    misclassified: int = 0
    shown: int = 0
    checked: int = 0
    predictions_from: str = ""
    note: str = ""
    indices: list[int] = field(default_factory=list)
    network: str = ""  # an ensemble: which member's network the maps are of


def load_network(zip_path: str | Path) -> Network:
    """The network of a cbtool-built portable/keras zip (an ensemble's first member); anything else is a
    SubmissionError saying why not."""
    from toolkit.artifacts import weights_file
    from toolkit.submission_zip import SubmissionZip

    with SubmissionZip(zip_path) as sub, tempfile.TemporaryDirectory(prefix="cbtool-gradcam-") as tmp:
        manifest = sub.manifest
        fmt, spec = manifest.get("format"), manifest.get("model") or {}
        member = _first_member(sub.model_py or "") if isinstance(manifest.get("members"), list) else None
        if member is not None and fmt in ("portable", "keras"):
            weights = Path(tmp) / weights_file(fmt)
            weights.write_bytes(sub.read(member["weights_file"], max_bytes=MAX_WEIGHTS_MB * 2**20))
            return Network(_rebuild(member["spec"], fmt, weights), int(member["input_size"]), str(member["resize"]),
                           about=f"{member['name']} ({member['spec'].get('variant')}), the ensemble's first network")
        if not manifest.get("cbtool_submission") or fmt not in ("portable", "keras") or not spec.get("variant"):
            found = "no cbtool manifest" if not manifest.get("cbtool_submission") else f"format {fmt!r}"
            raise SubmissionError(f"{zip_path}: {NEEDS_CBTOOL_ZIP}; found {found}")
        weights = Path(tmp) / weights_file(fmt)
        weights.write_bytes(sub.read(weights.name, max_bytes=MAX_WEIGHTS_MB * 2**20))
        model = _rebuild(model_spec(sub.model_py or "") or spec, fmt, weights)
    prep = manifest.get("preprocessing") or {}
    return Network(model, int(prep.get("input_size") or spec.get("input_size") or 96), str(prep.get("resize") or "bilinear"))


def model_spec(model_py: str) -> dict | None:
    """The literal `MODEL_SPEC = {...}` of a cbtool model.py (the spec the submission itself builds), read without
    running the file; None when there is no such literal."""
    value = _literal(model_py, "MODEL_SPEC")
    return value if isinstance(value, dict) else None


def _first_member(model_py: str) -> dict | None:
    """The first entry of an ensemble model.py's literal `MEMBERS = [...]` (what the submission builds), or None."""
    value = _literal(model_py, "MEMBERS")
    ok = isinstance(value, list) and value and isinstance(value[0], dict)
    return value[0] if ok and {"spec", "weights_file", "input_size", "resize", "name"} <= set(value[0]) else None


def _literal(model_py: str, name: str):
    """The literal value of the module-level assignment `name = ...`, read without running the file; None if none."""
    import ast

    try:
        tree = ast.parse(model_py)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def _rebuild(spec: dict, fmt: str, weights: Path):
    if fmt == "keras":
        from tensorflow import keras

        return keras.models.load_model(weights, compile=False)
    from toolkit.families import build_model, family_of
    from toolkit.int8 import dequantize_arrays  # an int8 zip's kernels; a float file passes through unchanged

    model = build_model(spec)
    family_of(spec["variant"]).arch_module().load_weights_npz(model, weights, decode=dequantize_arrays)
    return model


def gradcam(model, x: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """Grad-CAM maps (n, h, w) in [0, 1] of `class_index[i]` for each preprocessed input `x[i]`, on the last feature
    map (the last 4-D layer output before pooling): ReLU(sum_k mean(d score / d A_k) * A_k), normalised per image."""
    import tensorflow as tf
    from tensorflow import keras

    layer = _last_feature_map(model)
    probe = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    with tf.GradientTape() as tape:
        fmap, probs = probe(tf.convert_to_tensor(x), training=False)
        score = tf.gather(probs, tf.convert_to_tensor(class_index, dtype=tf.int32), batch_dims=1)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def _last_feature_map(model):
    """The last layer whose output is a spatial feature map (N, h, w, C) with h > 1."""
    for layer in reversed(model.layers):
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4 and (shape[1] or 0) > 1:
            return layer
    raise SubmissionError(f"network {model.name}: no 4-D feature map to compute Grad-CAM on")


def overlay(images: np.ndarray, cams: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 images with their maps drawn over them in the 'jet' colours (red = where the class score came from)."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = images.shape[1:3]
    out = np.empty(images.shape, dtype=np.uint8)
    for i, (img, cam) in enumerate(zip(images, cams)):
        big = np.asarray(Image.fromarray(np.uint8(255 * cam)).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
        heat = colormaps["jet"](big)[..., :3] * 255
        out[i] = np.clip((1 - alpha) * img.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)
    return out


def misclassified_sheet(zip_path: str | Path, images: np.ndarray, labels: np.ndarray, class_names: list[str], path: str | Path,
                        predictions: np.ndarray | None = None) -> Sheet:
    """Draw the first SHEET_IMAGES misclassified held-out images, each beside its Grad-CAM of the predicted class.

    `predictions`: the submission's own answers for every image (TTA included); without them the rebuilt network
    predicts the first PREDICT_MAX images itself. A zip without a TensorFlow network gives a Sheet with only a note.
    """
    sheet = Sheet()
    try:
        net = load_network(zip_path)
    except SubmissionError as exc:
        sheet.note = str(exc) if NEEDS_CBTOOL_ZIP in str(exc) else f"Grad-CAM skipped: {exc}"
        return sheet
    sheet.network = net.about
    labels = np.asarray(labels).reshape(-1)
    if predictions is not None and len(predictions) == len(labels):
        checked, preds = np.arange(len(labels)), np.asarray(predictions).reshape(-1)
        sheet.predictions_from = "the submission's own predictions"
    else:
        checked = np.arange(min(len(labels), PREDICT_MAX))
        preds = _predict(net, images[checked]).argmax(axis=1)
        sheet.predictions_from = f"the rebuilt network without TTA, on the first {len(checked)} held-out images"
    wrong = checked[preds[: len(checked)] != labels[checked]]
    sheet.checked, sheet.misclassified = len(checked), len(wrong)
    chosen = wrong[:SHEET_IMAGES]
    if not len(chosen):
        sheet.note = f"no misclassified image among the {len(checked)} checked: nothing to explain"
        return sheet
    predicted = preds[chosen]
    confidence = _predict(net, images[chosen])[np.arange(len(chosen)), predicted]
    shown = overlay(images[chosen], gradcam(net.model, net.inputs(images[chosen]), predicted))
    sheet.shown, sheet.indices = len(chosen), chosen.tolist()
    sheet.path = str(_draw(images[chosen], shown, chosen, labels, predicted, confidence, class_names, path, sheet))
    return sheet


def _predict(net: Network, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Softmax outputs of the rebuilt network, in bounded batches."""
    parts = []
    for start in range(0, len(images), batch):
        y = net.model(net.inputs(images[start:start + batch]), training=False)
        parts.append(np.asarray(y.numpy() if hasattr(y, "numpy") else y))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _draw(originals, overlays, indices, labels, predicted, confidence, class_names, path, sheet: Sheet) -> Path:
    """Pairs of tiles (the image with its true class | the Grad-CAM of the predicted class), four pairs a row."""
    from toolkit.data.clean_report import contact_sheet, zoom

    name = lambda k: class_names[k] if 0 <= k < len(class_names) else f"class {k}"  # noqa: E731
    stack = np.stack([img for pair in zip(originals, overlays) for img in pair])
    tiles = []
    for k, (i, pred, p) in enumerate(zip(indices, predicted, confidence)):
        tiles.append((2 * k, [f"#{int(i)} true:", name(int(labels[i]))]))
        tiles.append((2 * k + 1, [f"predicted ({p:.2f}):", name(int(pred))]))
    title = (f"{sheet.misclassified} of {sheet.checked} held-out images misclassified ({sheet.predictions_from}); showing "
             f"{len(indices)}: each image, then Grad-CAM of the class predicted (red = what drove that score)"
             + (f"; Grad-CAM of {sheet.network}" if sheet.network else ""))
    return contact_sheet(stack, tiles, Path(path), title, columns=8, scale=zoom(stack))
