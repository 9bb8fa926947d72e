"""EfficientNetV2, the TF side: ImageNet weights from keras.applications, and its freezing rule.

The network itself is `toolkit/arch.py` (core Keras layers, copied verbatim into submissions). It repeats
keras.applications' graph and layer names, so the notop weights move across by name, unchanged: keras' input
Rescaling/Normalization has no weights and is our "cbtool_input_norm" Rescaling (the spec's `input_rescale`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolkit.errors import ConfigError
from toolkit.families import get_variant
from toolkit.families._keras import leaf_layers, set_trainable_by_stage

_BLOCK = re.compile(r"^block(\d+)[a-z]+_")


def load_keras_weights(model, spec: dict, path: Path) -> None:
    """Load Keras' notop .h5 of `spec`'s variant (keras.applications, include_top=False) into our `model`."""
    reference = keras_reference(spec, include_head=False)
    reference.load_weights(str(path))
    map_keras_weights(reference, model)


def keras_reference(spec: dict, include_head: bool):
    """keras.applications' EfficientNetV2 of the same variant (weights None, its own input preprocessing on), pooled
    like our head when `include_head`."""
    import keras

    variant = get_variant(spec["variant"])
    if variant.keras_app is None:
        raise ConfigError(f"weights: {variant.name} has no keras.applications counterpart; use 'none' or a cbtool weights file")
    size = int(spec["input_size"])
    builder = getattr(keras.applications, variant.keras_app)
    return builder(weights=None, include_top=False, pooling="avg" if include_head else None,
                   input_shape=(size, size, 3), include_preprocessing=True)


def map_keras_weights(reference, model) -> None:
    """Copy a keras.applications EfficientNetV2's (include_top=False) weights into a toolkit.arch model of the same
    variant: every layer with weights has the same name and shapes in both."""
    source = {layer.name: layer.get_weights() for layer in leaf_layers(reference) if layer.get_weights()}
    for layer in model.layers:
        if not layer.get_weights() or layer.name == "head_dense":
            continue
        if layer.name not in source:
            raise ConfigError(f"weights: the Keras reference model has no weights for layer {layer.name}")
        layer.set_weights([np.asarray(w) for w in source[layer.name]])


def set_trainable(model, phase: int, unfreeze: int | str = "all") -> None:
    """EfficientNetV2's freezing rule (see the registry's `freezing`): stages by block number, BatchNorm with its
    stage (Keras runs a trainable=False BatchNormalization in inference mode, also inside fit)."""
    last = max((s for s in (_block_stage(layer.name) for layer in leaf_layers(model)) if s is not None), default=0)
    set_trainable_by_stage(model, phase, unfreeze, lambda name: stage_of(name, last), _is_head)


def stage_of(name: str, last: int) -> int | None:
    """The stage of a layer: its block number; the stem is stage 0, the top conv belongs to the `last` stage."""
    block = _block_stage(name)
    if block is not None:
        return block
    if name.startswith("stem_"):
        return 0
    return last if name.startswith("top_") else None


def _block_stage(name: str) -> int | None:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def _is_head(layer) -> bool:
    # by name: each squeeze-excite also holds a GlobalAveragePooling2D
    return layer.name.startswith("head_") or layer.name in ("avg_pool", "predictions")
