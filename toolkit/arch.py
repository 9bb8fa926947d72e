"""ConvNeXt and EfficientNetV2 from core Keras layers, and a neutral weights file (cbtool toolkit/arch.py).

This file is copied verbatim into generated submission `model.py` files: it imports only numpy and
tensorflow and uses `from tensorflow import keras`, so the same source runs under TF 2.15 (Keras 2
tf.keras) and TF 2.17+ (Keras 3). `build_model(spec)` picks the family from the variant's name
("convnext_tiny" -> ConvNeXt, "efficientnetv2_s" -> EfficientNetV2); the variants' sizes are named in
cbtool's family registry (toolkit/families) and reach this file through the spec.

Both networks start with the layer "cbtool_input_norm", a per-channel Rescaling of raw 0-255 float
pixels (the tensor reaching it is what the network sees, so sandboxes capture that layer's input), and
end with GlobalAveragePooling2D "head_gap" -> Dropout -> Dense softmax "head_dense" (float32).

ConvNeXt (why not `keras.applications.ConvNeXt*`: they build the 7x7 depthwise convolutions as
`Conv2D(groups=C)`, which TensorFlow runs very slowly on CPU and tf2onnx cannot convert, and their
GELU lowers to `Erfc`, which tf2onnx cannot convert either):
    input norm: ImageNet mean/std -> stem: Conv2D 4x4/4 + LayerNormalization(1e-6)
    -> stages of blocks: DepthwiseConv2D 7x7 -> LayerNorm -> Dense 4C -> GELU (exact, erf)
       -> Dense C (ConvNeXt's layer scale folded into this Dense's kernel and bias) -> residual add;
       between stages LayerNorm + Conv2D 2x2/2
    -> head_gap -> head LayerNorm "head_ln" -> head.

EfficientNetV2 (keras.applications' graph, layer names included; measured: keras.applications builds the
same B0/S under TF 2.15, 2.17 and 2.21, names and weight shapes alike, but it is rebuilt here anyway so
that the captured input layer has its name, the ONNX twin can write swish as x * sigmoid(x), and one
weights file serves every family): input norm from the spec's "input_rescale"
(keras' include_preprocessing: x/255 + ImageNet mean/std for B variants, x/128 - 1 for S/M/L)
    -> stem Conv2D 3x3/2 + BatchNorm + swish -> stages of FusedMBConv (Conv2D kxk expand) or MBConv
       (1x1 expand, DepthwiseConv2D kxk, squeeze-excite) blocks, each BatchNorm(momentum 0.9, eps 1e-3),
       a residual with stochastic depth (Dropout with noise_shape (N,1,1,1), keras' rate) when shapes allow
    -> top Conv2D 1x1 + BatchNorm + swish -> head_gap -> head.

Layer names are deterministic (`stem_conv`, `stage_2_block_5_pw2`, `block4a_se_reduce`, `head_dense`),
so weights can be moved by name between builds, Keras versions and the ONNX-friendly twin.
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
BN_MOMENTUM = 0.9  # EfficientNetV2's, as keras.applications
BN_EPS = 1e-3
DROP_CONNECT_RATE = 0.2  # keras.applications' drop_connect_rate: block i of n drops its residual branch at 0.2 * i / n

_NPZ_MARKER = "__cbtool_weights__"


def gelu_erf(x):
    """Exact GELU written with erf (not erfc), which tf2onnx converts: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))


def swish_sigmoid(x):
    """swish written as x * sigmoid(x): two ops every converter knows (Keras' "swish" may lower to a fused op)."""
    return x * tf.math.sigmoid(x)


def build_model(spec, onnx_friendly=False):
    """Build the network described by `spec` (a model_spec.json dict); `onnx_friendly` gives the ONNX twin.

    Both builds have identical layer names and weights; the twin only writes its activations in ops tf2onnx
    converts (`gelu_erf`, `swish_sigmoid`). The default build uses Keras' built-in activations, so that a saved
    `.keras` file loads without custom objects.
    """
    family = str(spec.get("variant", "convnext")).split("_")[0]
    backbones = {"convnext": _convnext, "efficientnetv2": _efficientnetv2}
    if family not in backbones:
        raise ValueError(f"model spec: variant {spec.get('variant')!r} is of no family this file builds "
                         f"(expected a name starting with {' or '.join(backbones)})")
    size = int(spec.get("input_size", 96))
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = backbones[family](inputs, spec, onnx_friendly)
    x = keras.layers.Dropout(float(spec.get("dropout", 0.0)), name="head_dropout")(x)
    outputs = keras.layers.Dense(
        int(spec["num_classes"]), activation="softmax", kernel_initializer="glorot_uniform",
        dtype="float32", name="head_dense",
    )(x)
    return keras.Model(inputs, outputs, name="cbtool_" + str(spec.get("variant", "convnext")))


def _input_norm(inputs, scale, offset):
    return keras.layers.Rescaling(scale=[float(s) for s in scale], offset=[float(o) for o in offset],
                                  dtype="float32", name=INPUT_LAYER_NAME)(inputs)


def _convnext(inputs, spec, onnx_friendly):
    depths, dims = [int(d) for d in spec["depths"]], [int(d) for d in spec["dims"]]
    if len(depths) != len(dims) or not depths:
        raise ValueError(f"model spec: depths {depths} and dims {dims} must be non-empty and of equal length")
    gelu = gelu_erf if onnx_friendly else "gelu"
    x = _input_norm(inputs, [1.0 / (255.0 * s) for s in IMAGENET_STD], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    x = keras.layers.Conv2D(dims[0], 4, strides=4, name="stem_conv")(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="stem_ln")(x)
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage > 0:
            x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"downsampling_{stage - 1}_ln")(x)
            x = keras.layers.Conv2D(dim, 2, strides=2, name=f"downsampling_{stage - 1}_conv")(x)
        for block in range(depth):
            x = _convnext_block(x, dim, f"stage_{stage}_block_{block}", gelu)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="head_ln")(x)


def _convnext_block(inputs, dim, name, gelu):
    x = keras.layers.DepthwiseConv2D(7, padding="same", name=name + "_dwconv")(inputs)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=name + "_ln")(x)
    x = keras.layers.Dense(4 * dim, name=name + "_pw1")(x)
    x = keras.layers.Activation(gelu, name=name + "_gelu")(x)
    # Layer scale gamma (init 1e-6) folded into the kernel: glorot_uniform scaled by 1e-6 is
    # VarianceScaling(scale=1e-12, fan_avg, uniform). The bias starts at zero either way.
    scaled = keras.initializers.VarianceScaling(scale=LAYER_SCALE_INIT ** 2, mode="fan_avg", distribution="uniform")
    x = keras.layers.Dense(dim, kernel_initializer=scaled, name=name + "_pw2")(x)
    return keras.layers.Add(name=name + "_add")([inputs, x])


def _efficientnetv2(inputs, spec, onnx_friendly):
    swish = swish_sigmoid if onnx_friendly else "swish"
    stem, top = [int(f) for f in spec["stem_top_filters"]]
    scale, offset = spec["input_rescale"]
    x = _conv_bn(_input_norm(inputs, scale, offset), stem, 3, 2, "stem_", swish)
    blocks = [dict(b) for b in spec["blocks"]]
    total, index = float(sum(int(b["repeats"]) for b in blocks)), 0
    for stage, args in enumerate(blocks, start=1):
        for j in range(int(args["repeats"])):
            block = _fused_mbconv if int(args["fused"]) else _mbconv
            x = block(x, int(args["in"] if j == 0 else args["out"]), int(args["out"]), int(args["expand"]),
                      int(args["kernel"]), int(args["strides"]) if j == 0 else 1, float(args["se"]), swish,
                      DROP_CONNECT_RATE * index / total, f"block{stage}{chr(97 + j)}_")
            index += 1
    x = _conv_bn(x, top, 1, 1, "top_", swish)
    return keras.layers.GlobalAveragePooling2D(name="head_gap")(x)


def _conv_bn(x, filters, kernel, strides, prefix, swish):
    """Conv2D (no bias) -> BatchNorm -> swish, named "<prefix>conv/bn/activation" as keras.applications does;
    `swish` None leaves the activation out."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=_conv_init(), name=prefix + "conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPS, name=prefix + "bn")(x)
    return keras.layers.Activation(swish, name=prefix + "activation")(x) if swish else x


def _fused_mbconv(inputs, filters_in, filters_out, expand, kernel, strides, se, swish, drop, name):
    """FusedMBConv: a kxk Conv2D expands (or, at expand 1, is the whole block), then squeeze-excite, 1x1 projection."""
    x = inputs
    if expand != 1:
        x = _conv_bn(x, filters_in * expand, kernel, strides, name + "expand_", swish)
    x = _squeeze_excite(x, filters_in, se, swish, name)
    single = expand == 1  # no expansion: the projection is the kxk strided conv, with its own activation
    x = _conv_bn(x, filters_out, kernel if single else 1, strides if single else 1, name + "project_",
                 swish if single else None)
    return _residual(inputs, x, filters_in, filters_out, strides, drop, name)


def _mbconv(inputs, filters_in, filters_out, expand, kernel, strides, se, swish, drop, name):
    """MBConv: 1x1 expansion, kxk DepthwiseConv2D, squeeze-excite, 1x1 projection."""
    x = inputs
    if expand != 1:
        x = _conv_bn(x, filters_in * expand, 1, 1, name + "expand_", swish)
    x = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                     depthwise_initializer=_conv_init(), name=name + "dwconv2")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name + "bn")(x)
    x = keras.layers.Activation(swish, name=name + "activation")(x)
    x = _squeeze_excite(x, filters_in, se, swish, name)
    x = _conv_bn(x, filters_out, 1, 1, name + "project_", None)
    return _residual(inputs, x, filters_in, filters_out, strides, drop, name)


def _squeeze_excite(x, filters_in, se, swish, name):
    if not 0 < se <= 1:
        return x
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name=name + "se_squeeze")(x)
    squeezed = keras.layers.Conv2D(max(1, int(filters_in * se)), 1, activation=swish, kernel_initializer=_conv_init(),
                                   name=name + "se_reduce")(squeezed)
    squeezed = keras.layers.Conv2D(x.shape[-1], 1, activation="sigmoid", kernel_initializer=_conv_init(),
                                   name=name + "se_expand")(squeezed)
    return keras.layers.Multiply(name=name + "se_excite")([x, squeezed])


def _residual(inputs, x, filters_in, filters_out, strides, drop, name):
    if strides != 1 or filters_in != filters_out:
        return x
    if drop:  # stochastic depth: a whole sample's residual branch dropped, at keras' rate (0 for the first block)
        x = keras.layers.Dropout(drop, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
    return keras.layers.Add(name=name + "add")([x, inputs])


def _conv_init():
    # keras.applications' EfficientNetV2 CONV_KERNEL_INITIALIZER, so a network trained from scratch starts alike
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


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


def save_weights_npz(model, path, dtype=None, encode=None):
    """Write every weight as a named array to `path` (an .npz readable by numpy alone); `encode`, if given, maps the
    arrays dict first (cbtool's int8 storage: toolkit/int8.py quantize_arrays)."""
    arrays = weight_arrays(model, dtype)
    if encode is not None:
        arrays = encode(arrays)
    arrays[_NPZ_MARKER] = np.asarray(ARCH_VERSION)
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npz" to the name
        np.savez(handle, **arrays)


def load_weights_npz(model, path, decode=None):
    """Set `model`'s weights layer by layer from a `save_weights_npz` file; float16 arrays become float32. `decode`,
    if given, maps the loaded arrays dict first (int8 kernels back to float: toolkit/int8.py dequantize_arrays)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if decode is not None:
        arrays = decode(arrays)
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
