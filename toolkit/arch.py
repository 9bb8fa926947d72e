"""ConvNeXt from core Keras layers, and a neutral weights file (cbtool toolkit/arch.py).

This file is copied verbatim into generated submission `model.py` files: it imports only numpy and
tensorflow and uses `from tensorflow import keras`, so the same source runs under TF 2.15 (Keras 2
tf.keras) and TF 2.17+ (Keras 3).

Why not `keras.applications.ConvNeXt*`: they build the 7x7 depthwise convolutions as
`Conv2D(groups=C)`, which TensorFlow runs very slowly on CPU and tf2onnx cannot convert, and their
GELU lowers to `Erfc`, which tf2onnx cannot convert either. Here the network is

    input (N, S, S, 3) float 0-255
    -> "cbtool_input_norm": Rescaling with per-channel ImageNet scale/offset (the first layer; the
       tensor reaching it is what the network sees, so sandboxes capture that layer's input)
    -> stem: Conv2D 4x4/4 + LayerNormalization(1e-6)
    -> stages of blocks: DepthwiseConv2D 7x7 -> LayerNorm -> Dense 4C -> GELU (exact, erf)
       -> Dense C (ConvNeXt's layer scale folded into this Dense's kernel and bias) -> residual add;
       between stages LayerNorm + Conv2D 2x2/2
    -> head: GlobalAveragePooling2D -> LayerNorm -> Dropout -> Dense softmax (float32).

Layer names are deterministic (`stem_conv`, `stage_2_block_5_pw2`, `downsampling_0_conv`, `head_dense`),
so weights can be moved by name between builds, Keras versions and the ONNX-friendly twin. The variants' depths
and dims are named in cbtool's family registry (toolkit/families) and reach this file through the spec.
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

ARCH_VERSION = 1
INPUT_LAYER_NAME = "cbtool_input_norm"
LAYER_NORM_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NPZ_MARKER = "__cbtool_weights__"


def gelu_erf(x):
    """Exact GELU written with erf (not erfc), which tf2onnx converts: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


def build_model(spec, onnx_friendly=False):
    """Build the ConvNeXt described by `spec` (a model_spec.json dict); `onnx_friendly` swaps GELU for `gelu_erf`.

    Both builds have identical layer names and weights. The default one uses Keras' built-in "gelu" so that
    a saved `.keras` file loads without custom objects.
    """
    depths, dims = [int(d) for d in spec["depths"]], [int(d) for d in spec["dims"]]
    if len(depths) != len(dims) or not depths:
        raise ValueError(f"model spec: depths {depths} and dims {dims} must be non-empty and of equal length")
    size = int(spec.get("input_size", 96))
    gelu = gelu_erf if onnx_friendly else "gelu"
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = keras.layers.Rescaling(
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        dtype="float32",
        name=INPUT_LAYER_NAME,
    )(inputs)
    x = keras.layers.Conv2D(dims[0], 4, strides=4, name="stem_conv")(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="stem_ln")(x)
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage > 0:
            x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"downsampling_{stage - 1}_ln")(x)
            x = keras.layers.Conv2D(dim, 2, strides=2, name=f"downsampling_{stage - 1}_conv")(x)
        for block in range(depth):
            x = _block(x, dim, f"stage_{stage}_block_{block}", gelu)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="head_ln")(x)
    x = keras.layers.Dropout(float(spec.get("dropout", 0.0)), name="head_dropout")(x)
    outputs = keras.layers.Dense(
        int(spec["num_classes"]), activation="softmax", kernel_initializer="glorot_uniform",
        dtype="float32", name="head_dense",
    )(x)
    return keras.Model(inputs, outputs, name="cbtool_" + str(spec.get("variant", "convnext")))


def _block(inputs, dim, name, gelu):
    x = keras.layers.DepthwiseConv2D(7, padding="same", name=name + "_dwconv")(inputs)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=name + "_ln")(x)
    x = keras.layers.Dense(4 * dim, name=name + "_pw1")(x)
    x = keras.layers.Activation(gelu, name=name + "_gelu")(x)
    # Layer scale gamma (init 1e-6) folded into the kernel: glorot_uniform scaled by 1e-6 is
    # VarianceScaling(scale=1e-12, fan_avg, uniform). The bias starts at zero either way.
    scaled = keras.initializers.VarianceScaling(scale=LAYER_SCALE_INIT ** 2, mode="fan_avg", distribution="uniform")
    x = keras.layers.Dense(dim, kernel_initializer=scaled, name=name + "_pw2")(x)
    return keras.layers.Add(name=name + "_add")([inputs, x])


def weight_arrays(model, dtype=None):
    """Every weight of `model` as {"<layer name>/<index>": array}, optionally cast (e.g. to float16)."""
    arrays = {}
    for layer in model.layers:
        for index, value in enumerate(layer.get_weights()):
            value = np.asarray(value)
            if dtype is not None and np.issubdtype(value.dtype, np.floating):
                value = value.astype(dtype)
            arrays[f"{layer.name}/{index}"] = value
    return arrays


def save_weights_npz(model, path, dtype=None):
    """Write every weight as a named array to `path` (an .npz readable by numpy alone)."""
    arrays = weight_arrays(model, dtype)
    arrays[_NPZ_MARKER] = np.asarray(ARCH_VERSION)
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npz" to the name
        np.savez(handle, **arrays)


def load_weights_npz(model, path):
    """Set `model`'s weights layer by layer from a `save_weights_npz` file; float16 arrays become float32."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if _NPZ_MARKER not in arrays:
        raise ValueError(f"{path}: not a cbtool weights file (no '{_NPZ_MARKER}' entry)")
    arrays.pop(_NPZ_MARKER)
    used = set()
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        values = []
        for index, old in enumerate(current):
            key = f"{layer.name}/{index}"
            if key not in arrays:
                raise ValueError(f"{path}: no array '{key}' for layer {layer.name} (wrong variant or spec?)")
            value = arrays[key]
            if value.shape != old.shape:
                raise ValueError(f"{path}: '{key}' has shape {value.shape}, the model expects {old.shape}")
            values.append(value.astype(old.dtype))
            used.add(key)
        layer.set_weights(values)
    extra = sorted(set(arrays) - used)
    if extra:
        raise ValueError(f"{path}: {len(extra)} arrays match no layer of the model, e.g. {extra[:3]}")
