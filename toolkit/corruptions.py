"""The one definition of cbtool's image corruptions: every family, its severity table, and the numpy code.

Both sides draw from here: `simulate --shift` (toolkit/runtime/shift.py, the hidden-test estimate) scores a
submission on the suite, and `train --augment corrupt` (toolkit/train/augment.py) calls the same `corrupt` inside
the tf.data pipeline, so a family trained on is pixel for pixel the family measured.

- `MEDMNIST_C`: eleven families modelled on MedMNIST-C's blood-cell corruptions (DESIGN.md section 5): pixelate,
  JPEG (quality 50 -> 7), defocus and motion blur, brightness up (x1.1 -> 1.4) and down (x0.9 -> 0.5), contrast up
  (x1.1 -> 1.3) and down (x0.9 -> 0.5), saturation, stain deposits and bubbles. The default `simulate --shift` suite.
- `EXTRA`: cheap camera/scanner families beyond MedMNIST-C (Gaussian and shot noise, colour cast, gamma, haze), so
  a user has families to train on while holding others out (`train --holdout-families`).

Everything is numpy or PIL, takes and returns uint8 (N, H, W, 3), and is a pure function of (images, family,
severity, seed): the random parameters of image i come from row i of one draw (or image i's own generator).
"""

from __future__ import annotations

import io
import zlib
from typing import Callable, Iterable

import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)

# One parameter per severity 1..5. Blur radii and blob counts are in pixels / per image at 96x96.
PARAMS: dict[str, tuple] = {
    "pixelate": (0.85, 0.7, 0.55, 0.45, 0.35),  # side of the down-sampled image, as a fraction
    "jpeg": (50, 35, 22, 12, 7),  # JPEG quality
    "defocus_blur": (1.0, 1.5, 2.0, 2.5, 3.0),  # disk radius
    "motion_blur": (3, 5, 7, 9, 11),  # streak length, random direction per image
    "brightness_up": (1.1, 1.175, 1.25, 1.325, 1.4),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "saturation": (1.25, 1.5, 1.75, 2.0, 2.5),  # chroma gain around each pixel's luminance
    "stain_deposits": (2, 4, 6, 9, 12),  # dark stain blobs per image
    "bubbles": (1, 2, 3, 4, 6),  # air bubbles per image
    "gaussian_noise": (4.0, 8.0, 12.0, 18.0, 26.0),  # sigma, in 0-255 units
    "shot_noise": (900.0, 400.0, 200.0, 100.0, 50.0),  # photons at full scale (Poisson): fewer = noisier
    "color_cast": (0.06, 0.12, 0.18, 0.25, 0.33),  # channel gain swing, in a random hue direction per image
    "gamma": (1.15, 1.3, 1.5, 1.75, 2.0),  # gamma, raised or lowered (1/gamma) per image at random
    "haze": (0.12, 0.22, 0.32, 0.42, 0.52),  # mean opacity of a smooth veil toward a bright airlight
}
FAMILIES = tuple(PARAMS)
MEDMNIST_C = FAMILIES[:11]
EXTRA = FAMILIES[11:]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_STAIN_RGB = np.array([78.0, 40.0, 112.0], dtype=np.float32)  # haematoxylin-like purple
_CHUNK = 512  # images per vectorised step, bounds the float32 working memory


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`images` (N, H, W, 3) uint8 corrupted by family `name` at `severity` (1-5); uint8 out, same shape."""
    if name not in PARAMS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(FAMILIES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, found {severity!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode()), int(severity)]))
    param = PARAMS[name][severity - 1]
    return _FAMILIES[name](images, param, rng)


def unknown_families(names: Iterable[str]) -> list[str]:
    """The names in `names` that are not corruption families (callers turn them into their own error)."""
    return [n for n in names if n not in PARAMS]


# --- the families -------------------------------------------------------------------------------------------


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _chunked(images: np.ndarray, fn: Callable[[np.ndarray, slice], np.ndarray]) -> np.ndarray:
    out = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        part = slice(start, min(start + _CHUNK, len(images)))
        out[part] = _to_uint8(fn(images[part].astype(np.float32), part))
    return out


def _brightness(images, factor, rng):
    return _chunked(images, lambda x, _: x * factor)


def _contrast(images, factor, rng):
    def apply(x, _):
        mean = (x @ _LUMA).mean(axis=(1, 2))[:, None, None, None]
        return (x - mean) * factor + mean

    return _chunked(images, apply)


def _saturation(images, factor, rng):
    def apply(x, _):
        grey = (x @ _LUMA)[..., None]
        return grey + (x - grey) * factor

    return _chunked(images, apply)


def _pixelate(images, fraction, rng):
    from PIL import Image

    out = np.empty_like(images)
    h, w = images.shape[1:3]
    small = (max(1, round(w * fraction)), max(1, round(h * fraction)))
    for i, img in enumerate(images):
        pil = Image.fromarray(img).resize(small, Image.BOX)
        out[i] = np.asarray(pil.resize((w, h), Image.NEAREST))
    return out


def _jpeg(images, quality, rng):
    from PIL import Image

    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def _shift_sum(x: np.ndarray, taps: list[tuple[int, int, float]]) -> np.ndarray:
    """Convolution as a weighted sum of shifted copies (reflect-padded): cheap for the small kernels used here."""
    reach = max(max(abs(dy), abs(dx)) for dy, dx, _ in taps)
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (reach, reach), (reach, reach), (0, 0)), mode="reflect")
    out = np.zeros_like(x)
    for dy, dx, weight in taps:
        out += weight * padded[:, reach + dy : reach + dy + h, reach + dx : reach + dx + w]
    return out


def _defocus(images, radius, rng):
    r = int(np.ceil(radius))
    taps = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius * radius]
    weighted = [(dy, dx, 1.0 / len(taps)) for dy, dx in taps]
    return _chunked(images, lambda x, _: _shift_sum(x, weighted))


def _motion_taps(length: int, angle: float) -> list[tuple[int, int, float]]:
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, length)
    points = {(int(round(v * np.sin(angle))), int(round(v * np.cos(angle)))) for v in t}
    return [(dy, dx, 1.0 / len(points)) for dy, dx in sorted(points)]


def _motion(images, length, rng):
    # 12 directions; images are grouped by direction so each group is one vectorised convolution.
    directions = rng.integers(0, 12, size=len(images))
    out = np.empty_like(images)
    for d in np.unique(directions):
        idx = np.flatnonzero(directions == d)
        taps = _motion_taps(int(length), np.pi * d / 12)
        out[idx] = _chunked(images[idx], lambda x, _: _shift_sum(x, taps))
    return out


def _blob_params(rng, n: int, k: int, h: int, w: int, radius: tuple[float, float]) -> dict[str, np.ndarray]:
    # One draw of shape (n, k, 7): row i only depends on the seed and i, never on how many images came along.
    u = rng.random((n, k, 7))
    lo, hi = radius
    return {
        "cy": u[..., 0] * h,
        "cx": u[..., 1] * w,
        "r": lo + u[..., 2] * (hi - lo),
        "aspect": 0.6 + 0.4 * u[..., 3],
        "angle": np.pi * u[..., 4],
        "wobble": 2 * np.pi * u[..., 5],
        "alpha": 0.45 + 0.35 * u[..., 6],
    }


def _window(cy: float, cx: float, reach: float, h: int, w: int) -> tuple[slice, slice]:
    """The pixel box a blob can touch: drawing only there keeps stains and bubbles cheap."""
    y0, y1 = max(0, int(cy - reach)), min(h, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(np.ceil(cx + reach)) + 1)
    return slice(y0, y1), slice(x0, x1)


def _stains(images, count, rng):
    n, h, w = images.shape[:3]
    p = _blob_params(rng, n, int(count), h, w, (3.0, 8.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = images.astype(np.float32)
    for i in range(n):
        for j in range(int(count)):
            cy, cx, r = p["cy"][i, j], p["cx"][i, j], p["r"][i, j]
            box = _window(cy, cx, 1.2 * r / p["aspect"][i, j] + 1, h, w)
            dy, dx = yy[box] - cy, xx[box] - cx
            c, s = np.cos(p["angle"][i, j]), np.sin(p["angle"][i, j])
            u, v = dx * c + dy * s, (-dx * s + dy * c) / p["aspect"][i, j]
            theta, phase = np.arctan2(v, u), p["wobble"][i, j]
            edge = r * (1 + 0.12 * np.sin(2 * theta + phase) + 0.08 * np.sin(5 * theta + 2 * phase))  # irregular outline
            mask = (np.clip(edge - np.hypot(u, v), 0, 2.0) / 2.0 * p["alpha"][i, j])[..., None]
            out[i][box] = out[i][box] * (1 - mask) + _STAIN_RGB * mask
    return _to_uint8(out)


def _bubbles(images, count, rng):
    n, h, w = images.shape[:3]
    p = _blob_params(rng, n, int(count), h, w, (7.0, 18.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = images.astype(np.float32)
    for i in range(n):
        for j in range(int(count)):
            cy, cx, r = p["cy"][i, j], p["cx"][i, j], p["r"][i, j]
            box = _window(cy, cx, r + 4, h, w)
            d = np.hypot(yy[box] - cy, xx[box] - cx) / r
            inside = (d < 1).astype(np.float32)[..., None]
            rim = np.exp(-(((d - 1) * r / 1.2) ** 2))[..., None]  # a dark refractive ring ~1 px wide
            glint = np.exp(-((np.hypot(yy[box] - cy + 0.4 * r, xx[box] - cx + 0.4 * r) / (0.15 * r)) ** 2))[..., None]
            x = out[i][box]
            x = x + inside * (255 - x) * 0.25  # the bubble's interior scatters light: washed out
            x = x * (1 - 0.55 * rim)
            out[i][box] = x + glint * (255 - x) * 0.8
    return _to_uint8(out)


def _per_image(images, rng, draw: Callable[[np.random.Generator, np.ndarray], np.ndarray]) -> np.ndarray:
    """Image i through `draw(generator_i, image_i as float32)`: a noise field's length varies with the draws, so each
    image gets its own child generator and never depends on the images before it."""
    out = np.empty_like(images)
    for i, (img, gen) in enumerate(zip(images, rng.spawn(len(images)))):
        out[i] = _to_uint8(draw(gen, img.astype(np.float32)))
    return out


def _gaussian_noise(images, sigma, rng):
    return _per_image(images, rng, lambda g, x: x + g.normal(0.0, sigma, x.shape))


def _shot_noise(images, photons, rng):
    return _per_image(images, rng, lambda g, x: g.poisson(x / 255.0 * photons) / photons * 255.0)


def _color_cast(images, swing, rng):
    # Gains 1 + swing * cos(hue + 120 deg * channel): a white-balance error toward a random hue, mean gain 1.
    hue = rng.uniform(0, 2 * np.pi, size=len(images))
    gains = 1.0 + swing * np.cos(hue[:, None] + 2 * np.pi * np.arange(3) / 3)
    return _chunked(images, lambda x, part: x * gains[part][:, None, None, :].astype(np.float32))


def _gamma(images, gamma, rng):
    exponent = np.where(rng.random(len(images)) < 0.5, gamma, 1.0 / gamma).astype(np.float32)
    return _chunked(images, lambda x, part: 255.0 * (x / 255.0) ** exponent[part][:, None, None, None])


def _haze(images, opacity, rng):
    # A veil that varies smoothly over the image: a 4x4 grid of strengths, bilinearly upsampled.
    n, h, w = images.shape[:3]
    u = rng.random((n, 17))  # one row per image: 16 veil strengths and the airlight
    grid, airlight = 0.5 + u[:, :16].reshape(n, 4, 4), 225.0 + 30.0 * u[:, 16]
    wy, wx = _linear_weights(h, 4), _linear_weights(w, 4)
    veil = np.clip(opacity * np.einsum("yi,nij,xj->nyx", wy, grid, wx), 0.0, 0.95).astype(np.float32)[..., None]

    def apply(x, part):
        return x * (1 - veil[part]) + airlight[part][:, None, None, None].astype(np.float32) * veil[part]

    return _chunked(images, apply)


def _linear_weights(size: int, knots: int) -> np.ndarray:
    """(size, knots) weights of linear interpolation from `knots` evenly spaced values to `size` pixels."""
    pos = np.linspace(0, knots - 1, size)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(knots)[None, :]))


_FAMILIES: dict[str, Callable[[np.ndarray, object, np.random.Generator], np.ndarray]] = {
    "pixelate": _pixelate,
    "jpeg": _jpeg,
    "defocus_blur": _defocus,
    "motion_blur": _motion,
    "brightness_up": _brightness,
    "brightness_down": _brightness,
    "contrast_up": _contrast,
    "contrast_down": _contrast,
    "saturation": _saturation,
    "stain_deposits": _stains,
    "bubbles": _bubbles,
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "color_cast": _color_cast,
    "gamma": _gamma,
    "haze": _haze,
}
