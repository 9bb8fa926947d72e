"""ConvNeXt, the TF side: ImageNet weights from keras.applications, and its freezing rule.

The network itself is `toolkit/arch.py` (core Keras layers, copied verbatim into submissions). keras.applications'
ConvNeXt weights are mapped across layer by layer: grouped `Conv2D` kernels (7,7,1,C) become `DepthwiseConv2D`
kernels (7,7,C,1), and each block's LayerScale gamma is folded into the preceding Dense (kernel * gamma, bias * gamma).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolkit.errors import ConfigError
from toolkit.families import get_variant
from toolkit.families._keras import leaf_layers, set_trainable_by_stage

_BLOCK = re.compile(r"stage_(\d+)_block_(\d+)_(depthwise_conv|layernorm|pointwise_conv_1|pointwise_conv_2|layer_scale)$")
_DOWN = re.compile(r"downsampling_(layernorm|conv)_(\d+)$")
_BLOCK_PARTS = {"depthwise_conv": "dwconv", "layernorm": "ln", "pointwise_conv_1": "pw1", "pointwise_conv_2": "pw2",
                "layer_scale": "gamma"}


def load_keras_weights(model, spec: dict, path: Path) -> None:
    """Load Keras' notop .h5 of `spec`'s variant (keras.applications, include_top=False) into our `model`."""
    reference = keras_reference(spec, include_head=False)
    reference.load_weights(str(path))
    map_keras_weights(reference, model)


def keras_reference(spec: dict, include_head: bool):
    """keras.applications' ConvNeXt of the same variant (weights None), pooled and normalised like our head."""
    import keras

    variant = get_variant(spec["variant"])
    if variant.keras_app is None:
        raise ConfigError(f"weights: {variant.name} has no keras.applications counterpart; use 'none' or a cbtool weights file")
    size = int(spec["input_size"])
    builder = getattr(keras.applications, variant.keras_app)
    return builder(weights=None, include_top=False, pooling="avg" if include_head else None, input_shape=(size, size, 3))


def map_keras_weights(reference, model) -> None:
    """Copy a keras.applications ConvNeXt's (include_top=False) weights into a toolkit.arch model of the same variant."""
    source = _reference_weights(reference)
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


def _reference_weights(reference) -> dict[str, list[np.ndarray]]:
    """keras.applications' weights keyed by our layer names (block gammas as "<block>_gamma")."""
    source: dict[str, list[np.ndarray]] = {}
    for layer in leaf_layers(reference):
        weights, name = layer.get_weights(), layer.name
        if not weights:
            continue
        if m := _BLOCK.search(name):
            source[f"stage_{m.group(1)}_block_{m.group(2)}_{_BLOCK_PARTS[m.group(3)]}"] = weights
        elif m := _DOWN.search(name):
            source[f"downsampling_{m.group(2)}_{'ln' if m.group(1) == 'layernorm' else 'conv'}"] = weights
        elif name.endswith("stem_conv"):
            source["stem_conv"] = weights
        elif name.endswith("stem_layernorm"):
            source["stem_ln"] = weights
        elif type(layer).__name__ == "LayerNormalization":
            source["head_ln"] = weights  # the unnamed final LayerNormalization of include_top=False
    return source


def set_trainable(model, phase: int, unfreeze: int | str = "all") -> None:
    """ConvNeXt's freezing rule (see the registry's `freezing`), for our network and keras.applications' alike."""
    set_trainable_by_stage(model, phase, unfreeze, stage_of, _is_head)


def stage_of(name: str) -> int | None:
    """The stage a layer belongs to, from its name; a downsampling layer belongs to the stage it leads into."""
    match = re.search(r"stages?_(\d+)", name)
    if match:
        return int(match.group(1))
    match = re.search(r"downsampl\w*?_(\d+)", name)
    return int(match.group(1)) + 1 if match else None


def _is_head(layer) -> bool:
    return "GlobalAveragePooling" in type(layer).__name__ or "head" in layer.name
