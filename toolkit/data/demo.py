"""Bundled demo data: synthetic 8-class 96x96 "blood cell" images in the AN2DL 2024 schema, with planted problems.

Each class has its own hue, cell size and nucleus shape; every image varies in position, size, rotation, colour and
noise, so a classifier has to learn something but a small one can. Planted on top, with ground truth returned:
exact duplicates, near duplicates (JPEG re-encode, brightness shift), conflicting-label copies, and two
out-of-context "meme" images each repeated many times with random labels (the AN2DL pattern).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from toolkit.data.io import BLOOD_CELL_CLASSES, Dataset

SIZE = 96

# Per class: cell RGB, nucleus RGB, cell radius (px), nucleus lobes (0 = none, -1 = ring), granules per image.
_CLASSES = [
    ((120, 60, 160), (50, 20, 90), 26, 1, 60),     # Basophil: purple, dense dark granules
    ((235, 120, 70), (150, 40, 60), 28, 2, 25),    # Eosinophil: orange, bilobed
    ((200, 60, 60), (40, 30, 70), 18, 1, 0),       # Erythroblast: small red, round dark nucleus
    ((70, 170, 160), (30, 80, 110), 34, -1, 0),    # Immature granulocytes: large teal, ring nucleus
    ((80, 110, 220), (30, 40, 130), 22, 1, 0),     # Lymphocyte: blue, nucleus fills the cell
    ((160, 170, 180), (80, 90, 120), 33, 2, 0),    # Monocyte: large grey, folded nucleus
    ((220, 150, 210), (120, 50, 140), 27, 4, 0),   # Neutrophil: lilac, multi-lobed
    ((200, 200, 60), (140, 120, 20), 10, 0, 12),   # Platelet: small yellow cluster
]


def orientation_tiles(n_per_class: int, size: int = 64, seed: int = 0, separation: float = 1.0) -> Dataset:
    """A set whose labels depend on orientation (tests, benchmarks/bench_robust.py): 4 classes that differ only by a
    quarter turn: a reddish part beside a bluish part, red on the left (class 0), bottom, right or top; the cut and
    both colours vary. Under any flip or 90-degree turn a label becomes another. `separation` < 1 pulls both colours
    toward their mean grey, so the parts differ subtly and corruptions can hide which side is which."""
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:size, :size][1]
    images, labels = [], []
    for c in range(4):
        for _ in range(n_per_class):
            cut = rng.integers(size * 3 // 10, size * 7 // 10)
            red = rng.integers([150, 20, 20], [255, 90, 90]).astype(np.float32)
            blue = rng.integers([20, 20, 150], [90, 90, 255]).astype(np.float32)
            grey = (red + blue) / 2
            red, blue = grey + separation * (red - grey), grey + separation * (blue - grey)
            img = np.where((xx < cut)[..., None], red, blue) + rng.normal(0, 12, (size, size, 3))
            images.append(np.clip(np.rot90(img, c), 0, 255).astype(np.uint8))
            labels.append(c)
    order = rng.permutation(len(labels))
    names = ["red left", "red bottom", "red right", "red top"]
    return Dataset(np.stack(images)[order], np.array(labels, dtype=np.int64)[order], names, np.arange(len(labels)))


@dataclass
class DemoPlan:
    """How many planted items of each kind (scaled with n unless given)."""

    exact: int
    near: int
    conflicts: int
    meme_copies: tuple[int, int]


def make_demo(n: int = 2400, seed: int = 0, meme_copies: tuple[int, int] = (100, 100)) -> tuple[Dataset, dict]:
    """Build the demo set of `n` images and the ground truth of what was planted (indices into the result)."""
    plan = DemoPlan(exact=max(2, n // 80), near=max(2, n // 40), conflicts=max(2, n // 120), meme_copies=tuple(meme_copies))
    n_genuine = n - plan.exact - plan.near - plan.conflicts - sum(plan.meme_copies)
    if n_genuine < 8 * 4:
        raise ValueError(f"n={n} is too small for the planted items ({n - n_genuine}); use n >= {n - n_genuine + 32}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n_genuine) % 8
    rng.shuffle(labels)
    images = [_cell(int(c), rng) for c in labels]
    labels = labels.tolist()
    kinds = ["genuine"] * n_genuine
    groups: dict[str, list[list[int]]] = {"exact": [], "near": [], "conflict": [], "meme": []}
    sources = rng.choice(n_genuine, plan.exact + plan.near + plan.conflicts, replace=False)
    for k, src in enumerate(sources.tolist()):
        kind = "exact" if k < plan.exact else "near" if k < plan.exact + plan.near else "conflict"
        img, label = images[src], labels[src]
        if kind == "near":
            img = _jpeg(img, int(rng.integers(70, 92))) if k % 2 == 0 else _brighten(img, int(rng.choice([-1, 1]) * rng.integers(4, 11)))
        elif kind == "conflict":
            label = int((label + rng.integers(1, 8)) % 8)
        kinds[src] = f"{kind}_source"
        groups[kind].append([src, len(images)])
        images.append(img.copy())
        labels.append(label)
        kinds.append(kind)
    for meme, copies in zip((_face(), _poster()), plan.meme_copies):
        members = []
        for j in range(copies):
            members.append(len(images))
            images.append(_jpeg(meme, 85) if j % 4 == 3 else meme.copy())
            labels.append(int(rng.integers(0, 8)))
            kinds.append("meme")
        groups["meme"].append(members)
    return _shuffled(images, labels, kinds, groups, rng, seed)


def _shuffled(images, labels, kinds, groups, rng, seed) -> tuple[Dataset, dict]:
    order = rng.permutation(len(images))
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    ds = Dataset(
        images=np.stack(images)[order],
        labels=np.asarray(labels, dtype=np.int64)[order],
        class_names=list(BLOOD_CELL_CLASSES),
        original_indices=np.arange(len(order), dtype=np.int64),
        schema="an2dl2024",
    )
    kinds_new = [kinds[i] for i in order]
    truth = {
        "seed": seed,
        "n": len(order),
        "genuine": [i for i, k in enumerate(kinds_new) if k == "genuine"],
        "groups": {kind: [sorted(int(where[i]) for i in g) for g in gs] for kind, gs in groups.items()},
    }
    return ds, truth


def _cell(c: int, rng: np.random.Generator) -> np.ndarray:
    body_rgb, nuc_rgb, radius, lobes, granules = _CLASSES[c]
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    tint = rng.normal(0, 6, 3)
    bg = np.array([232, 212, 218]) + tint
    img = bg + rng.normal(0, 5, (SIZE, SIZE, 3)) + (yy[..., None] - SIZE / 2) * rng.normal(0, 0.15)
    r = radius * rng.uniform(0.85, 1.15)
    cy, cx = SIZE / 2 + rng.uniform(-12, 12, 2)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
    ecc = rng.uniform(0.85, 1.0)
    body = (u / r) ** 2 + (v / (r * ecc)) ** 2 < 1
    img[body] = np.array(body_rgb) + rng.normal(0, 8, 3) + rng.normal(0, 7, (int(body.sum()), 3))
    nucleus = _nucleus(u, v, r, lobes, rng) & body
    img[nucleus] = np.array(nuc_rgb) + rng.normal(0, 6, 3) + rng.normal(0, 6, (int(nucleus.sum()), 3))
    for _ in range(granules):  # drawn in a 5x5 window around each centre: far cheaper than full-image masks
        gr, ga = r * np.sqrt(rng.uniform(0, 0.8)), rng.uniform(0, 2 * np.pi)
        gy, gx = cy + gr * np.sin(ga), cx + gr * np.cos(ga)
        y0, x0 = int(max(gy - 2, 0)), int(max(gx - 2, 0))
        wy, wx = yy[y0 : y0 + 5, x0 : x0 + 5], xx[y0 : y0 + 5, x0 : x0 + 5]
        g = (wx - gx) ** 2 + (wy - gy) ** 2 < rng.uniform(1.5, 4)
        img[y0 : y0 + 5, x0 : x0 + 5][g] = np.array(nuc_rgb) * 0.7
    return np.clip(img, 0, 255).astype(np.uint8)


def _nucleus(u, v, r, lobes, rng) -> np.ndarray:
    if lobes == 0:
        return np.zeros(u.shape, bool)
    if lobes == -1:
        d = np.sqrt(u**2 + v**2) / r
        return (d > 0.35) & (d < 0.6)
    if lobes == 1:
        nr = r * rng.uniform(0.45, 0.8)
        return (u - r * 0.1) ** 2 + v**2 < nr**2
    mask = np.zeros(u.shape, bool)
    for k in range(lobes):
        a = 2 * np.pi * k / lobes + rng.uniform(-0.3, 0.3)
        mask |= (u - 0.4 * r * np.cos(a)) ** 2 + (v - 0.4 * r * np.sin(a)) ** 2 < (r * 0.3) ** 2
    return mask


def _face() -> np.ndarray:
    """A cartoon smiley on a blue background: nothing like a cell."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:] = (40, 90, 200)
    img[(yy - 48) ** 2 + (xx - 48) ** 2 < 38**2] = (250, 215, 30)
    for ex in (34, 62):
        img[(yy - 38) ** 2 + (xx - ex) ** 2 < 6**2] = (20, 20, 20)
    d = np.sqrt((yy - 50) ** 2 + (xx - 48) ** 2)
    img[(d > 20) & (d < 25) & (yy > 55)] = (20, 20, 20)
    return img


def _poster() -> np.ndarray:
    """A striped poster with a text-like block: high-contrast, unlike any cell."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.where((((xx + yy) // 8) % 2 == 0)[..., None], np.uint8([230, 30, 30]), np.uint8([250, 250, 250]))
    img = img.astype(np.uint8)
    img[60:84, 10:86] = (10, 10, 10)
    img[66:78, 14:82][(np.arange(68) // 5 % 2 == 0)[None, :].repeat(12, 0)] = (255, 255, 255)
    return img


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def _brighten(img: np.ndarray, delta: int) -> np.ndarray:
    return np.clip(img.astype(np.int16) + delta, 0, 255).astype(np.uint8)
