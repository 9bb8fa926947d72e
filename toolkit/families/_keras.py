"""Keras model walking shared by the families' TF-side modules: nested layers, and freezing by stage."""

from __future__ import annotations

from typing import Callable

from toolkit.errors import ConfigError


def leaf_layers(model) -> list:
    """Every non-container layer of `model`, nested models flattened, in order."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        out.extend(leaf_layers(layer) if inner else [layer])
    return out


def _containers(model) -> list:
    out = [model]
    for layer in model.layers:
        if getattr(layer, "layers", None):
            out.extend(_containers(layer))
    return out


def set_trainable_by_stage(model, phase: int, unfreeze: int | str, stage_of: Callable[[str], int | None],
                           is_head: Callable[[object], bool]) -> None:
    """Phase 1: only the head (the first `is_head` layer onwards) trains. Phase 2: everything, or the head and the
    last `unfreeze` stages, a layer's stage given by `stage_of(layer name)`."""
    layers = leaf_layers(model)
    head = next((i for i, layer in enumerate(layers) if is_head(layer)), None)
    if head is None:
        raise ConfigError("cannot find the head (global pooling) of the model to freeze the backbone")
    for container in _containers(model):
        container.trainable = True
    if phase == 2 and unfreeze == "all":
        for layer in layers:
            layer.trainable = True
        return
    keep: set[int] = set()
    if phase == 2:
        stages = sorted({s for s in (stage_of(layer.name) for layer in layers[:head]) if s is not None})
        if not stages:
            raise ConfigError(f"unfreeze={unfreeze}: cannot find stage names in model {model.name}")
        keep = set(stages[-int(unfreeze):])
    for i, layer in enumerate(layers):
        layer.trainable = i >= head or stage_of(layer.name) in keep
