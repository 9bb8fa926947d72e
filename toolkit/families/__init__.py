"""The model family registry: every architecture cbtool trains, and every named variant of it, written once.

TensorFlow-free (the CLI lists choices from it). Everything else derives from here: `train --model` choices, which
variants have ImageNet weights, the spec's depths/dims, the source file a portable submission embeds, the layer
whose input the sandbox captures.

Adding a family is one module + registry entries + tests:
- `toolkit/families/<name>.py`, the TF-side code, imported lazily. It defines
  `load_keras_weights(model, spec, path)` (a keras.applications notop .h5 into our network) and
  `set_trainable(model, phase, unfreeze)` (its freezing rule); its network comes from the `arch_source` file.
- one `Family` and its `Variant`s in `FAMILIES` / `VARIANTS` below.
- tests: a variant builds, its ImageNet mapping matches keras.applications, its export passes the parity checks.

`Family` fields: `name`; `impl`, the dotted path of that module; `arch_source`, the file under toolkit/ that builds
the network from a model_spec (`build_model(spec, onnx_friendly=False)`, numpy + tensorflow only) and that the
portable model.py embeds verbatim; `input_layer`, the first layer (its input is the tensor the network sees);
`min_input_size`, the smallest input side (the total downsampling); `freezing`, the phase-1/phase-2 rule in words;
`onnx_twin`, whether `build_model(spec, onnx_friendly=True)` gives the ONNX-convertible twin.
`Variant` fields: `name`; `family`; `arch`, what the spec needs besides the head (depths, dims); `imagenet`, where
Keras' notop ImageNet weights live (file, URL, sha256) or None; `keras_app`, the keras.applications class it maps
from, or None.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from toolkit.errors import ConfigError

TOOLKIT_DIR = Path(__file__).resolve().parent.parent
_KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class ImagenetWeights:
    """Keras' notop ImageNet weights of a variant: the cache file name, its download URL and sha256."""

    file: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Family:
    """An architecture: its TF-side module, the source that builds it, and the facts the rest of cbtool needs."""

    name: str
    impl: str
    arch_source: str
    input_layer: str
    min_input_size: int
    freezing: str
    onnx_twin: bool = True

    def module(self) -> ModuleType:
        """The family's TF-side module (imports Keras)."""
        return importlib.import_module(self.impl)

    def arch_module(self) -> ModuleType:
        """The `arch_source` file as a module: build_model, save_weights_npz, load_weights_npz (imports TensorFlow)."""
        return importlib.import_module("toolkit." + Path(self.arch_source).stem)

    @property
    def arch_path(self) -> Path:
        """The `arch_source` file itself (what the portable model.py embeds)."""
        return TOOLKIT_DIR / self.arch_source


@dataclass(frozen=True)
class Variant:
    """A named size of a family; `arch` holds the spec's architecture fields (depths, dims)."""

    name: str
    family: str
    arch: dict[str, Any]
    imagenet: ImagenetWeights | None = None
    keras_app: str | None = None


def _convnext(name: str, depths: tuple, dims: tuple, sha256: str | None, keras_app: str | None) -> Variant:
    file = f"{name}_notop.h5"
    imagenet = ImagenetWeights(file, f"{_KERAS_APPS_URL}convnext/{file}", sha256) if sha256 else None
    return Variant(name, "convnext", {"depths": list(depths), "dims": list(dims)}, imagenet, keras_app)


FAMILIES = {
    "convnext": Family(
        name="convnext", impl="toolkit.families.convnext", arch_source="arch.py", input_layer="cbtool_input_norm",
        min_input_size=32,
        freezing="phase 1 trains the head (pooling onwards); phase 2 everything, or the head and the last N stages "
                 "(a downsampling layer belongs to the stage it leads into)",
    ),
}

# sha256 values: Keras' own (keras/src/applications/convnext.py WEIGHTS_HASHES[variant][1]); tests compare them.
VARIANTS = {v.name: v for v in (
    _convnext("convnext_test", (1, 1, 2, 1), (8, 16, 32, 64), None, None),  # tiny, for tests: no ImageNet weights
    _convnext("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768),
              "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1", "ConvNeXtTiny"),
    _convnext("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768),
              "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab", "ConvNeXtSmall"),
    _convnext("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024),
              "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45", "ConvNeXtBase"),
    _convnext("convnext_large", (3, 3, 27, 3), (192, 384, 768, 1536),
              "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd", "ConvNeXtLarge"),
)}


def variant_names() -> tuple[str, ...]:
    """Every registered variant, in registry order (smallest test variant first)."""
    return tuple(VARIANTS)


def pretrained_variants() -> tuple[str, ...]:
    """The variants that have ImageNet weights."""
    return tuple(name for name, v in VARIANTS.items() if v.imagenet is not None)


def get_variant(name: str) -> Variant:
    """The registry entry of `name`; an unknown name is a ConfigError listing the known ones."""
    if name not in VARIANTS:
        raise ConfigError(f"model: unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def family_of(variant_name: str) -> Family:
    """The family of a variant (e.g. a model_spec's "variant")."""
    return FAMILIES[get_variant(variant_name).family]


def build_model(spec: dict, onnx_friendly: bool = False):
    """The network of a model_spec, built by its family's arch source (the code a portable submission runs)."""
    return family_of(spec["variant"]).arch_module().build_model(spec, onnx_friendly=onnx_friendly)
