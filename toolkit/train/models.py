"""A variant's JSON model spec, and model creation with pretrained weights, driven by the family registry.

The network comes from the variant's family (`toolkit.families`): its arch source builds it, its TF-side module maps
keras.applications' ImageNet weights onto it. Here only what every family shares: the spec, where Keras caches the
notop weights, and which loader a weights file needs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from toolkit.errors import ConfigError
from toolkit.families import family_of, get_variant, pretrained_variants


def model_spec(variant: str, num_classes: int, class_names: list[str], input_size: int = 96,
               dropout: float = 0.2) -> dict:
    """The model_spec.json dict for a registered variant: its family's architecture fields, input size, classes."""
    entry, family = get_variant(variant), family_of(variant)
    if int(num_classes) < 2:
        raise ConfigError(f"model: num_classes must be >= 2, found {num_classes}")
    if len(class_names) != int(num_classes):
        raise ConfigError(f"model: {len(class_names)} class names for {num_classes} classes")
    if int(input_size) < family.min_input_size:
        raise ConfigError(f"model: input_size must be >= {family.min_input_size} ({family.name} downsamples by "
                          f"{family.min_input_size}), found {input_size}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model: dropout must be in [0, 1), found {dropout}")
    return {"arch_version": 1, "variant": variant, **{k: list(v) for k, v in entry.arch.items()},
            "input_size": int(input_size), "num_classes": int(num_classes), "dropout": float(dropout),
            "class_names": [str(c) for c in class_names]}


def create_model(spec: dict, weights: str | os.PathLike | None = "none"):
    """Build the network of `spec`; weights: "none", "imagenet", or a local file (Keras notop .h5,
    a cbtool .weights.h5, or a cbtool weights.npz). The classification head stays freshly initialised
    for ImageNet/notop weights."""
    family = family_of(spec["variant"])
    if weights is None or str(weights) == "none":
        return family.arch_module().build_model(spec)
    if str(weights) == "imagenet":  # resolved before building, so an offline failure comes fast
        path = imagenet_weights_path(spec["variant"])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights: no such file {path} (expected 'none', 'imagenet' or a weights file)")
    arch = family.arch_module()
    model = arch.build_model(spec)
    if path.name.endswith(".weights.h5"):
        _load_or_fail(lambda: model.load_weights(str(path)), path, "a cbtool .weights.h5 of the same variant")
    elif path.suffix == ".npz":
        from toolkit.int8 import dequantize_arrays  # an --int8 export's weights.npz too (float files pass unchanged)

        _load_or_fail(lambda: arch.load_weights_npz(model, str(path), decode=dequantize_arrays), path,
                      "a cbtool weights.npz of the same variant")
    else:
        imagenet = get_variant(spec["variant"]).imagenet
        notop = imagenet.file if imagenet else f"a {spec['variant']} notop .h5"
        _load_or_fail(lambda: family.module().load_keras_weights(model, spec, path), path,
                      f"Keras' {notop} (keras.applications, include_top=False)")
    return model


def _load_or_fail(load, path: Path, expected: str) -> None:
    try:
        load()
    except ConfigError:
        raise
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
    weights = get_variant(variant).imagenet
    if weights is None:
        raise ConfigError(f"weights: no ImageNet weights for {variant!r}; use 'none' or a file "
                          f"(ImageNet weights exist for {', '.join(pretrained_variants())})")
    import keras

    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints "Downloading data from ..." on stdout (--json)
            return Path(keras.utils.get_file(weights.file, weights.url, cache_subdir="models", file_hash=weights.file_hash))
    except Exception as exc:  # network down, DNS failure, hash mismatch: all explained the same way
        target = keras_models_dir() / weights.file
        raise ConfigError(
            f"weights: could not get ImageNet weights for {variant} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Keras looks for {target} ({weights.algorithm} {weights.file_hash}; the directory follows $KERAS_HOME). "
            f"Offline: download {weights.url} elsewhere and place it at that path, "
            f"or pass the file itself with --weights PATH."
        ) from exc
