"""The model registry: named ConvNeXt variants, their JSON spec, and model creation with pretrained weights.

The network itself is `toolkit.arch` (core Keras layers, copied verbatim into submissions). ImageNet weights come
from `keras.applications.ConvNeXt*` (Keras' own download and cache) and are mapped across layer by layer:
grouped `Conv2D` kernels (7,7,1,C) become `DepthwiseConv2D` kernels (7,7,C,1), and each block's LayerScale gamma
is folded into the preceding Dense (kernel * gamma, bias * gamma).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np

from toolkit.errors import ConfigError

# Same table as toolkit.arch.VARIANTS (kept here too so listing variants does not import TensorFlow).
VARIANTS = {
    "convnext_test": {"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64], "imagenet": False},
    "convnext_tiny": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768], "imagenet": True},
    "convnext_small": {"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768], "imagenet": True},
    "convnext_base": {"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024], "imagenet": True},
    "convnext_large": {"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536], "imagenet": True},
}

# sha256 of Keras' `<variant>_notop.h5` files, as in keras/src/applications/convnext.py (WEIGHTS_HASHES[...][1]).
NOTOP_SHA256 = {
    "convnext_tiny": "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "convnext_small": "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab",
    "convnext_base": "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45",
    "convnext_large": "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd",
}
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/convnext/"


def list_variants() -> list[str]:
    """Registered variant names, smallest (convnext_test) first."""
    return list(VARIANTS)


def model_spec(variant: str, num_classes: int, class_names: list[str], input_size: int = 96,
               dropout: float = 0.2) -> dict:
    """The model_spec.json dict (see PLAN.md) for a registered variant."""
    if variant not in VARIANTS:
        raise ConfigError(f"model: unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if int(num_classes) < 2:
        raise ConfigError(f"model: num_classes must be >= 2, found {num_classes}")
    if len(class_names) != int(num_classes):
        raise ConfigError(f"model: {len(class_names)} class names for {num_classes} classes")
    if int(input_size) < 32:
        raise ConfigError(f"model: input_size must be >= 32 (ConvNeXt downsamples by 32), found {input_size}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model: dropout must be in [0, 1), found {dropout}")
    entry = VARIANTS[variant]
    return {"arch_version": 1, "variant": variant, "depths": list(entry["depths"]), "dims": list(entry["dims"]),
            "input_size": int(input_size), "num_classes": int(num_classes), "dropout": float(dropout),
            "class_names": [str(c) for c in class_names]}


def create_model(spec: dict, weights: str | os.PathLike | None = "none"):
    """Build the network of `spec`; weights: "none", "imagenet", or a local file (Keras notop .h5,
    a cbtool .weights.h5, or a cbtool weights.npz). The classification head stays freshly initialised
    for ImageNet/notop weights."""
    from toolkit.arch import build_model, load_weights_npz

    if weights is None or str(weights) == "none":
        return build_model(spec)
    if str(weights) == "imagenet":  # resolved before building, so an offline failure comes fast
        path = imagenet_weights_path(spec["variant"])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights: no such file {path} (expected 'none', 'imagenet' or a weights file)")
    model = build_model(spec)
    if path.name.endswith(".weights.h5"):
        _load_or_fail(lambda: model.load_weights(str(path)), path, "a cbtool .weights.h5 of the same variant")
    elif path.suffix == ".npz":
        _load_or_fail(lambda: load_weights_npz(model, str(path)), path, "a cbtool weights.npz of the same variant")
    else:
        reference = _keras_reference(spec, include_head=False)
        _load_or_fail(lambda: reference.load_weights(str(path)), path,
                      f"Keras' {spec['variant']}_notop.h5 (keras.applications, include_top=False)")
        map_keras_weights(reference, model)
    return model


def _load_or_fail(load, path: Path, expected: str) -> None:
    try:
        load()
    except Exception as exc:  # Keras raises ValueError/KeyError/OSError variously; one message for all
        raise ConfigError(f"weights: could not load {path} (expected {expected}): {type(exc).__name__}: {exc}") from exc


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: $KERAS_HOME/models (default ~/.keras/models), /tmp/.keras if unwritable."""
    base = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    if not os.access(base, os.W_OK):
        base = Path("/tmp/.keras")
    return base / "models"


def imagenet_weights_path(variant: str) -> Path:
    """Return the local path of Keras' ImageNet notop weights, downloading them through Keras if needed."""
    if variant not in NOTOP_SHA256:
        raise ConfigError(f"weights: no ImageNet weights for {variant!r}; use 'none' or a file "
                          f"(ImageNet weights exist for {', '.join(NOTOP_SHA256)})")
    import keras

    fname = f"{variant}_notop.h5"
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints "Downloading data from ..." on stdout (--json)
            return Path(keras.utils.get_file(fname, WEIGHTS_URL + fname, cache_subdir="models",
                                             file_hash=NOTOP_SHA256[variant]))
    except Exception as exc:  # network down, DNS failure, hash mismatch: all explained the same way
        target = keras_models_dir() / fname
        raise ConfigError(
            f"weights: could not get ImageNet weights for {variant} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Keras looks for {target} (sha256 {NOTOP_SHA256[variant]}; the directory follows $KERAS_HOME). "
            f"Offline: download {WEIGHTS_URL + fname} elsewhere and place it at that path, "
            f"or pass the file itself with --weights PATH."
        ) from exc


def _keras_reference(spec: dict, include_head: bool):
    """keras.applications' ConvNeXt of the same variant (weights None), pooled and normalised like our head."""
    import keras

    builder = {"convnext_tiny": keras.applications.ConvNeXtTiny, "convnext_small": keras.applications.ConvNeXtSmall,
               "convnext_base": keras.applications.ConvNeXtBase, "convnext_large": keras.applications.ConvNeXtLarge}
    if spec["variant"] not in builder:
        raise ConfigError(f"weights: {spec['variant']} has no keras.applications counterpart; use 'none' or a cbtool weights file")
    size = int(spec["input_size"])
    return builder[spec["variant"]](weights=None, include_top=False, pooling="avg" if include_head else None,
                                    input_shape=(size, size, 3))


_BLOCK = re.compile(r"stage_(\d+)_block_(\d+)_(depthwise_conv|layernorm|pointwise_conv_1|pointwise_conv_2|layer_scale)$")
_DOWN = re.compile(r"downsampling_(layernorm|conv)_(\d+)$")


def map_keras_weights(reference, model) -> None:
    """Copy a keras.applications ConvNeXt's (include_top=False) weights into a toolkit.arch model of the same variant."""
    source: dict[str, list[np.ndarray]] = {}
    head_ln = None
    for layer in _flat_layers(reference):
        weights = layer.get_weights()
        if not weights:
            continue
        name = layer.name
        if m := _BLOCK.search(name):
            part = {"depthwise_conv": "dwconv", "layernorm": "ln", "pointwise_conv_1": "pw1",
                    "pointwise_conv_2": "pw2", "layer_scale": "gamma"}[m.group(3)]
            source[f"stage_{m.group(1)}_block_{m.group(2)}_{part}"] = weights
        elif m := _DOWN.search(name):
            source[f"downsampling_{m.group(2)}_{'ln' if m.group(1) == 'layernorm' else 'conv'}"] = weights
        elif name.endswith("stem_conv"):
            source["stem_conv"] = weights
        elif name.endswith("stem_layernorm"):
            source["stem_ln"] = weights
        elif type(layer).__name__ == "LayerNormalization":
            head_ln = weights  # the unnamed final LayerNormalization of include_top=False
    if head_ln is not None:
        source["head_ln"] = head_ln
    for layer in model.layers:
        name = layer.name
        if not layer.get_weights() or name == "head_dense":
            continue
        if name not in source:
            raise ConfigError(f"weights: the Keras reference model has no weights for layer {name}")
        values = [np.asarray(w) for w in source[name]]
        if name.endswith("_dwconv"):
            kernel = values[0]
            values[0] = kernel.reshape(kernel.shape[0], kernel.shape[1], kernel.shape[3], 1)
        elif name.endswith("_pw2"):
            gamma = np.asarray(source[name[: -len("pw2")] + "gamma"][0])
            values = [values[0] * gamma[None, :], values[1] * gamma]
        layer.set_weights(values)


def _flat_layers(model) -> list:
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        out.extend(_flat_layers(layer) if inner else [layer])
    return out
