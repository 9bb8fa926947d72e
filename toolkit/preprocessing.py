"""The one preprocessing definition: raw (N, H, W, 3) pixels 0-255 -> the float32 tensor the network receives.

This file is copied verbatim into every generated submission `model.py`, so it imports numpy only and nothing
from cbtool. Training calls `preprocess` on every batch; export and build-submission record the sha256 of this
source, and `cbtool validate-preprocessing` compares the bytes each side produces.

What it does, and deliberately does not do:
- casts to float32 and keeps the 0-255 range: cbtool's ConvNeXt normalises inside the network (its first
  layer), exactly like keras.applications' ConvNeXt; dividing by 255 here would normalise twice;
- optionally resizes to `input_size` x `input_size` with a fixed, numpy-only bilinear kernel (half-pixel
  centres, no antialiasing), so the result is byte-identical on every TensorFlow/Keras version.
"""

import numpy as np

RESIZE_METHODS = ("bilinear", "nearest")


def preprocess(images, input_size=96, resize="bilinear"):
    """Return float32 (N, input_size, input_size, 3) in [0, 255] from uint8/float (N, H, W, 3) or one (H, W, 3)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError("expected images of shape (N, H, W, 3), got %s" % (x.shape,))
    x = x.astype(np.float32, copy=False)
    if x.shape[1] != input_size or x.shape[2] != input_size:
        if resize not in RESIZE_METHODS:
            raise ValueError("resize must be one of %s, got %r" % (RESIZE_METHODS, resize))
        x = _resize(x, int(input_size), resize)
    return np.ascontiguousarray(x, dtype=np.float32)


def _resize(x, size, method):
    rows = _sample_positions(x.shape[1], size)
    cols = _sample_positions(x.shape[2], size)
    if method == "nearest":
        r = np.clip(np.floor(rows + 0.5).astype(np.int64), 0, x.shape[1] - 1)
        c = np.clip(np.floor(cols + 0.5).astype(np.int64), 0, x.shape[2] - 1)
        return x[:, r][:, :, c]
    r0, r1, wr = _bilinear_taps(rows, x.shape[1])
    c0, c1, wc = _bilinear_taps(cols, x.shape[2])
    top = x[:, r0] * (1 - wr)[None, :, None, None] + x[:, r1] * wr[None, :, None, None]
    out = top[:, :, c0] * (1 - wc)[None, None, :, None] + top[:, :, c1] * wc[None, None, :, None]
    return out.astype(np.float32)


def _sample_positions(n_in, n_out):
    # half-pixel centres: output pixel i samples input coordinate (i + 0.5) * n_in / n_out - 0.5
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _bilinear_taps(pos, n_in):
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)
