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
`Variant` fields: `name` (`<family>_<size>`: arch.py's build_model dispatches on the part before the first "_");
`family`; `arch`, what the spec needs besides the head (every value a list: ConvNeXt's depths and dims,
EfficientNetV2's blocks, stem/top widths and input rescaling); `imagenet`, where Keras' notop ImageNet weights live
(file, URL, hash) or None; `keras_app`, the keras.applications class it maps from, or None.

Both families share `toolkit/arch.py` as their arch source: a submission embeds one self-contained file, and one
copy of the weights-file code (save/load_weights_npz) serves every family.
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
    """Keras' notop ImageNet weights of a variant: the cache file name, its download URL, and the hash Keras checks.

    `file_hash` is Keras' own value: a sha256 for ConvNeXt, an md5 for EfficientNetV2 (keras.utils.get_file tells
    them apart by length, as it does for keras.applications itself)."""

    file: str
    url: str
    file_hash: str

    @property
    def algorithm(self) -> str:
        """"sha256" or "md5", as keras.utils.get_file's hash_algorithm="auto" decides."""
        return "sha256" if len(self.file_hash) == 64 else "md5"


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
        return importlib.import_module("toolkit." + ".".join(Path(self.arch_source).with_suffix("").parts))

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


# keras.applications' EfficientNetV2 input rescaling, as one per-channel scale/offset on raw 0-255 pixels: the B
# variants x/255 then ImageNet mean/std (its Normalization layer), S/M/L x/128 - 1.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RESCALE_B = [[1.0 / (255.0 * s) for s in _IMAGENET_STD], [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)]]
_RESCALE_SML = [[1.0 / 128.0] * 3, [-1.0] * 3]


def _mb(fused: int, repeats: int, in_: int, out: int, expand: int, strides: int, se: float = 0.0) -> dict:
    """One stage of EfficientNetV2 blocks (keras' blocks_args; kernel 3 everywhere, width/depth coefficients 1)."""
    return {"fused": fused, "repeats": repeats, "kernel": 3, "strides": strides, "expand": expand,
            "in": in_, "out": out, "se": se}


def _effnetv2(size: str, blocks: list, stem_top: tuple, rescale: list, md5: str | None) -> Variant:
    name, keras_name = f"efficientnetv2_{size}", f"efficientnetv2-{size}"
    file = f"{keras_name}_notop.h5"
    imagenet = ImagenetWeights(file, f"{_KERAS_APPS_URL}efficientnet_v2/{file}", md5) if md5 else None
    keras_app = f"EfficientNetV2{size.upper()}" if md5 else None
    arch = {"blocks": blocks, "stem_top_filters": list(stem_top), "input_rescale": rescale}
    return Variant(name, "efficientnetv2", arch, imagenet, keras_app)


_B0 = [_mb(1, 1, 32, 16, 1, 1), _mb(1, 2, 16, 32, 4, 2), _mb(1, 2, 32, 48, 4, 2), _mb(0, 3, 48, 96, 4, 2, 0.25),
       _mb(0, 5, 96, 112, 6, 1, 0.25), _mb(0, 8, 112, 192, 6, 2, 0.25)]
_S = [_mb(1, 2, 24, 24, 1, 1), _mb(1, 4, 24, 48, 4, 2), _mb(1, 4, 48, 64, 4, 2), _mb(0, 6, 64, 128, 4, 2, 0.25),
      _mb(0, 9, 128, 160, 6, 1, 0.25), _mb(0, 15, 160, 256, 6, 2, 0.25)]
_M = [_mb(1, 3, 24, 24, 1, 1), _mb(1, 5, 24, 48, 4, 2), _mb(1, 5, 48, 80, 4, 2), _mb(0, 7, 80, 160, 4, 2, 0.25),
      _mb(0, 14, 160, 176, 6, 1, 0.25), _mb(0, 18, 176, 304, 6, 2, 0.25), _mb(0, 5, 304, 512, 6, 1, 0.25)]
_L = [_mb(1, 4, 32, 32, 1, 1), _mb(1, 7, 32, 64, 4, 2), _mb(1, 7, 64, 96, 4, 2), _mb(0, 10, 96, 192, 4, 2, 0.25),
      _mb(0, 19, 192, 224, 6, 1, 0.25), _mb(0, 25, 224, 384, 6, 2, 0.25), _mb(0, 7, 384, 640, 6, 1, 0.25)]
# tiny, for tests: both block kinds, a residual of each, squeeze-excite, the same /32 downsampling; no ImageNet weights
_TEST = [_mb(1, 2, 16, 16, 1, 1), _mb(1, 1, 16, 24, 4, 2), _mb(0, 2, 24, 32, 4, 2, 0.25), _mb(0, 1, 32, 48, 4, 2, 0.25),
         _mb(0, 1, 48, 64, 4, 2, 0.25)]


FAMILIES = {
    "convnext": Family(
        name="convnext", impl="toolkit.families.convnext", arch_source="arch.py", input_layer="cbtool_input_norm",
        min_input_size=32,
        freezing="phase 1 trains the head (pooling onwards); phase 2 everything, or the head and the last N stages "
                 "(a downsampling layer belongs to the stage it leads into)",
    ),
    "efficientnetv2": Family(
        name="efficientnetv2", impl="toolkit.families.efficientnetv2", arch_source="arch.py",
        input_layer="cbtool_input_norm", min_input_size=32,
        freezing="phase 1 trains the head (pooling onwards); phase 2 everything, or the head and the last N stages "
                 "(the stem is stage 0, top_conv/top_bn belong to the last stage). BatchNormalization layers freeze "
                 "with their stage, and a frozen one runs in inference mode (its moving mean/variance, ImageNet's "
                 "when pretrained) even while fit() trains the rest: Keras' rule for trainable=False; an unfrozen "
                 "one normalises by batch statistics and updates its moving averages (momentum 0.9, as keras')",
    ),
}

# Hashes: Keras' own (keras/src/applications/convnext.py WEIGHTS_HASHES[variant][1], sha256;
# efficient_net_v2.py WEIGHTS_HASHES[size][1], md5); tests compare them and the architectures with keras'.
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
    _convnext("convnext_xlarge", (3, 3, 27, 3), (256, 512, 1024, 2048),
              "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05", "ConvNeXtXLarge"),
    _effnetv2("test", _TEST, (16, 128), _RESCALE_SML, None),
    _effnetv2("b0", _B0, (32, 1280), _RESCALE_B, "893217f2bb855e2983157299931e43ff"),
    _effnetv2("s", _S, (24, 1280), _RESCALE_SML, "af0682fb74e8c54910f2d4393339c070"),
    _effnetv2("m", _M, (24, 1280), _RESCALE_SML, "1b8dc055df72dde80d614482840fe342"),
    _effnetv2("l", _L, (32, 1280), _RESCALE_SML, "b0b66b5c863aef5b46e8608fe1711615"),
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
