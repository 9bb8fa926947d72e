"""int8 weights: per-channel symmetric int8 storage of conv/dense kernels (cbtool toolkit/int8.py).

This file is copied verbatim into generated submission `model.py` files (numpy only): it is the one owner of the
int8 weights format, written by `cbtool export --int8` / `build-submission --int8` and read back at load.

Format: a named-array weights file (toolkit/arch.py `weight_arrays`, keys "<layer>/<index>") in which every floating
array with ndim >= 2 (the kernels of Conv2D, DepthwiseConv2D and Dense layers) is stored as int8 `q` under its own
key, and its float32 scale under the key + SCALE_SUFFIX. Biases, LayerNorm/BatchNorm weights and BatchNorm statistics
(ndim 1) stay float32. Dequantized: w = q * scale (numpy broadcasting; the scale keeps the kernel's ndim).

Symmetric, per channel: scale = max|w| / 127 over each channel's slice, q = round(w / scale) clipped to [-127, 127],
so |w - q * scale| <= scale / 2 element by element. An all-zero channel gets scale 1 (q is 0 there, w comes back 0).

The channel axis: a kernel's output channels are its last axis (Dense (in, out), Conv2D (kh, kw, in, out)), except a
4-d kernel whose last axis has size 1, which is a DepthwiseConv2D kernel (kh, kw, C, 1): there each of its C
channels (axis 2) gets its own scale, not one scale for the whole layer. (A Conv2D with a single output filter has the
same shape and then gets per-input-channel scales: still symmetric per channel, as accurate, read back the same way.)
"""

import numpy as np

SCALE_SUFFIX = ":int8_scale"
QMAX = 127


def channel_axis(shape):
    """The axis whose slices get one scale each: the last, or axis 2 of a depthwise (kh, kw, C, 1) kernel."""
    if len(shape) == 4 and shape[-1] == 1:
        return 2
    return len(shape) - 1


def quantize(w):
    """(int8 q, float32 scale) for one kernel; the scale has w's ndim (size 1 except on the channel axis)."""
    w = np.asarray(w, dtype=np.float32)
    axis = channel_axis(w.shape)
    others = tuple(i for i in range(w.ndim) if i != axis)
    peak = np.max(np.abs(w), axis=others, keepdims=True)
    scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def is_kernel(key, value):
    """A weights-file entry that int8 storage quantizes: a floating "<layer>/<index>" array of ndim >= 2."""
    value = np.asarray(value)
    return "/" in key and value.ndim >= 2 and np.issubdtype(value.dtype, np.floating)


def quantize_arrays(arrays):
    """A weight_arrays dict with every kernel as int8 + its scale; other floating arrays as float32, the rest as is."""
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if is_kernel(key, value):
            out[key], out[key + SCALE_SUFFIX] = quantize(value)
        elif np.issubdtype(value.dtype, np.floating):
            out[key] = value.astype(np.float32)
        else:
            out[key] = value
    return out


def is_quantized(arrays):
    """Whether a weights dict holds int8 kernels (any scale entry)."""
    return any(key.endswith(SCALE_SUFFIX) for key in arrays)


def dequantize_arrays(arrays):
    """float32 kernels back from an int8 weights dict; a float32/float16 dict comes back unchanged (safe to call always)."""
    if not is_quantized(arrays):
        return arrays
    out = {}
    for key, value in arrays.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = arrays.get(key + SCALE_SUFFIX)
        if scale is None:
            out[key] = value
        elif value.dtype != np.int8 or scale.ndim != value.ndim:
            raise ValueError("int8 weights: '%s' is %s of shape %s with a scale of shape %s (expected int8 and a scale "
                             "of the same ndim)" % (key, value.dtype, value.shape, scale.shape))
        else:
            out[key] = value.astype(np.float32) * scale.astype(np.float32)
    return out
