"""Finding and removing exact duplicates, near duplicates, conflicting labels and out-of-context clusters.

The workflow: exact hashes group identical images; perceptual hashes (pHash OR dHash within a Hamming threshold)
propose near-duplicate candidates between the distinct images; a pixel measure confirms a candidate before it counts
(smooth cell images collide in hash space); confirmed links and exact groups form connected components, and each
component of two or more images is then judged: out-of-context cluster, conflicting labels, or plain duplicates.
Separately, every image gets an "unlike the rest" score.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from toolkit.data import hashing
from toolkit.data.io import Dataset
from toolkit.errors import ConfigError

# Defaults measured on the demo data (seeds 0-2, 2,400 images): planted near copies (JPEG q70-91, brightness +-4..10)
# sit at pHash 0-4 / dHash 0-14 and pixel distance <= 0.9; distinct images reach pHash/dHash <= 8 by the tens of
# thousands but never come closer than 2.06 in pixel distance.
PHASH_THRESHOLD = 8
DHASH_THRESHOLD = 8
PIXEL_THRESHOLD = 1.5
# JPEG's error sits on edges, so it grows with an image's contrast (the mean absolute deviation of its grey
# thumbnail): the striped demo poster re-encoded at q85 moves 2.01 (contrast 71, so 0.028 of it; q70 0.038), past
# PIXEL_THRESHOLD, while smooth cell copies stay <= 1.2. A pair also counts when its distance is within this share of
# the lower contrast of the two. Demo seeds 0-5: true pairs reach at most 0.71 of the resulting limit, distinct pairs
# (about 3,000 per seed with enough contrast for this term to matter) come no closer than 1.34 of it.
CONTRAST_THRESHOLD = 0.04
THUMB = 32

REASONS = ("outlier_cluster", "conflicting_labels", "exact_duplicate", "near_duplicate", "outlier")


@dataclass
class CleanConfig:
    """Thresholds and policies for `find_problems`."""

    phash_threshold: int = PHASH_THRESHOLD
    dhash_threshold: int = DHASH_THRESHOLD
    pixel_threshold: float = PIXEL_THRESHOLD
    contrast_threshold: float = CONTRAST_THRESHOLD  # or within this share of the pair's lower contrast (0 = off)
    conflicts: str = "drop"  # or "keep-majority"
    cluster_min_copies: int = 10  # a group this large is an out-of-context cluster (the AN2DL memes: 98-1,600 copies)
    cluster_min_classes: int = 3  # ... and so is one whose copies carry this many different labels
    drop_outliers: int = 0  # also drop the N images scored most unlike the rest
    outlier_top: int = 50  # how many of the ranking to list in the report
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.conflicts not in ("drop", "keep-majority"):
            raise ConfigError(f"conflicts must be 'drop' or 'keep-majority', got {self.conflicts!r}")
        for name in ("phash_threshold", "dhash_threshold"):
            if not 0 <= getattr(self, name) < 64:
                raise ConfigError(f"{name} must be 0-63 (bits of a 64-bit hash), got {getattr(self, name)}")
        for name in ("pixel_threshold", "contrast_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Removal:
    """One dropped row: its index in the input, why, its group, and its distances to the group's reference image."""

    index: int
    reason: str
    group: int | None
    label: int
    phash_distance: int | None = None
    dhash_distance: int | None = None
    pixel_distance: float | None = None


@dataclass
class Group:
    """A component of two or more images linked as exact or confirmed near copies."""

    id: int
    kind: str
    members: list[int]
    labels: list[int]
    kept: int | None


@dataclass
class CleanReport:
    """Everything `find_problems` decided, serialisable to JSON."""

    n_input: int
    kept: list[int]
    removed: list[Removal]
    groups: list[Group]
    outliers: list[dict]
    config: dict
    candidates: dict
    timings: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        c = Counter(r.reason for r in self.removed)
        return {reason: c.get(reason, 0) for reason in REASONS}

    def to_dict(self) -> dict:
        return {
            "n_input": self.n_input,
            "n_kept": len(self.kept),
            "n_removed": len(self.removed),
            "removed_by_reason": self.counts(),
            "config": self.config,
            "candidates": self.candidates,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "removed": [asdict(r) for r in self.removed],
            "groups": [asdict(g) for g in self.groups],
            "outliers": self.outliers,
        }


@dataclass
class Links:
    """The duplicate graph: a component id per image, plus the features needed to explain each link."""

    component: np.ndarray
    exact_group: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    thumbs: np.ndarray
    colour: np.ndarray
    candidates: dict


def find_links(images: np.ndarray, config: CleanConfig | None = None, timings: dict | None = None,
               progress: Callable[[int, int], None] | None = None) -> Links:
    """Exact groups + confirmed near-duplicate links over `images`, as connected components.

    `progress(k, total)` reports k more of the `total` images to hash perceptually (one per exact-duplicate group).
    """
    config = config or CleanConfig()
    timings = timings if timings is not None else {}
    n = len(images)
    t = time.perf_counter()
    exact = hashing.exact_groups(hashing.exact_hashes(images))
    reps = np.unique(exact)  # perceptual work only on one image per exact group
    ph, dh = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    ph[reps], dh[reps] = hashing.perceptual_hashes(images[reps], workers=config.workers, progress=progress)
    ph, dh = ph[exact], dh[exact]
    timings["hash"] = time.perf_counter() - t
    t = time.perf_counter()
    i, j = _candidate_pairs(ph[reps], dh[reps], config)
    i, j = reps[i], reps[j]
    timings["search"] = time.perf_counter() - t
    t = time.perf_counter()
    colour = colour_thumbnails(images)
    thumbs = grey_thumbnails(colour)
    _, ok = confirm_pairs(thumbs, i, j, config.pixel_threshold, config.contrast_threshold)
    edges_i = np.concatenate([np.arange(n), i[ok]])
    edges_j = np.concatenate([exact, j[ok]])
    component = hashing.connected_components(n, edges_i, edges_j)
    timings["confirm"] = time.perf_counter() - t
    candidates = {"hash_candidates": int(len(i)), "confirmed": int(ok.sum()), "rejected_by_pixels": int((~ok).sum())}
    return Links(component, exact, ph, dh, thumbs, colour, candidates)


def _candidate_pairs(ph: np.ndarray, dh: np.ndarray, config: CleanConfig) -> tuple[np.ndarray, np.ndarray]:
    n = len(ph)
    pi, pj, _ = hashing.hamming_pairs(ph, config.phash_threshold)
    di, dj, _ = hashing.hamming_pairs(dh, config.dhash_threshold)
    codes = np.unique(np.concatenate([pi * n + pj, di * n + dj]))
    return codes // n, codes % n


def colour_thumbnails(images: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Block-mean RGB thumbnails (float32, N x size x size x 3); PIL bilinear when the size does not divide."""
    n, h, w, _ = images.shape
    out = np.empty((n, size, size, 3), np.float32)
    if h % size or w % size:
        from PIL import Image

        for k, img in enumerate(images):
            out[k] = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), np.float32)
        return out
    fy, fx = h // size, w // size
    for s in range(0, n, 512):  # strided uint16 sums: much faster than a float reshape-mean over split axes
        block = images[s : s + 512]
        rows = block[:, 0::fy].astype(np.uint16)
        for k in range(1, fy):
            rows += block[:, k::fy]
        cols = rows[:, :, 0::fx].copy()
        for k in range(1, fx):
            cols += rows[:, :, k::fx]
        out[s : s + len(block)] = cols
    out *= np.float32(1.0 / (fy * fx))
    return out


def grey_thumbnails(colour: np.ndarray) -> np.ndarray:
    """Mean-centred grey thumbnails from colour ones: brightness shifts cancel, JPEG noise averages out."""
    grey = colour @ np.array([0.299, 0.587, 0.114], np.float32)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    return grey


def pixel_distance(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Mean absolute difference (0-255 grey levels) between the thumbnails of each pair."""
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        a, b = thumbs[i[s : s + chunk]], thumbs[j[s : s + chunk]]
        out[s : s + chunk] = np.abs(a - b).mean(axis=(1, 2))
    return out


def contrast(thumbs: np.ndarray) -> np.ndarray:
    """Each image's contrast: the mean absolute deviation (grey levels) of its mean-centred grey thumbnail."""
    return np.abs(thumbs).mean(axis=(1, 2))


def confirm_limit(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float, relative: float = 0.0) -> np.ndarray:
    """The pixel distance up to which each pair counts as one image: `threshold`, or `relative` x the lower contrast
    of the two when that is larger (a re-encoded high-contrast image moves further; see CONTRAST_THRESHOLD)."""
    limit = np.full(len(i), threshold, np.float32)
    if relative > 0 and len(i):
        spread = contrast(thumbs)
        limit = np.maximum(limit, np.float32(relative) * np.minimum(spread[i], spread[j]))
    return limit


def confirm_pairs(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: float,
                  relative: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel distance of each pair and whether it is within `confirm_limit`. A 4x4-pooled distance, a lower bound of
    the full one (|mean of differences| <= mean of |differences|), rejects most hash collisions at 1/16 of the cost."""
    limit = confirm_limit(thumbs, i, j, threshold, relative)
    size = thumbs.shape[1]
    pooled = thumbs.reshape(len(thumbs), size // 4, 4, size // 4, 4).mean(axis=(2, 4))
    dist = pixel_distance(pooled, i, j)
    maybe = np.flatnonzero(dist <= limit)
    dist[maybe] = pixel_distance(thumbs, i[maybe], j[maybe])
    return dist, dist <= limit


def find_problems(ds: Dataset, config: CleanConfig | None = None, timings: dict | None = None,
                  progress: Callable[[int, int], None] | None = None) -> CleanReport:
    """Decide what to remove from `ds` and why; nothing is written. `progress` as in `find_links`."""
    config = config or CleanConfig()
    timings = timings if timings is not None else {}
    links = find_links(ds.images, config, timings, progress)
    t = time.perf_counter()
    removed, groups = [], []
    for members in _components(links.component):
        group, dropped = _judge(members, ds.labels, links, config)
        groups.append(group)
        removed.extend(dropped)
    scores = outlier_scores(links.colour, ds.labels)
    removed_set = {r.index for r in removed}
    ranking = [int(k) for k in np.argsort(-scores, kind="stable")]
    candidates = [k for k in ranking if k not in removed_set]
    for k in candidates[: config.drop_outliers]:
        removed.append(Removal(k, "outlier", None, int(ds.labels[k])))
    removed.sort(key=lambda r: r.index)
    gone = {r.index for r in removed}
    outliers = [{"index": k, "score": round(float(scores[k]), 3), "label": int(ds.labels[k]), "removed": k in gone}
                for k in candidates[: max(config.outlier_top, config.drop_outliers)]]
    timings["decide"] = time.perf_counter() - t
    return CleanReport(len(ds), [k for k in range(len(ds)) if k not in gone], removed, groups, outliers,
                       asdict(config), links.candidates, timings)


def _components(component: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(component, kind="stable")
    values, starts, counts = np.unique(component[order], return_index=True, return_counts=True)
    return [order[s : s + c] for s, c in zip(starts, counts) if c > 1]


def _judge(members: np.ndarray, labels: np.ndarray, links: Links, config: CleanConfig) -> tuple[Group, list[Removal]]:
    members = np.sort(members)
    member_labels = labels[members]
    distinct = np.unique(member_labels)
    gid = int(members[0])
    if len(members) >= config.cluster_min_copies or len(distinct) >= config.cluster_min_classes:
        kind, kept = "outlier_cluster", None
    elif len(distinct) > 1:
        kind, kept = "conflicting_labels", _majority(members, member_labels) if config.conflicts == "keep-majority" else None
    else:
        kind, kept = "duplicates", int(members[0])
    reference = kept if kept is not None else int(members[0])
    removed = []
    for m in members.tolist():
        if m == kept:
            continue
        reason = kind if kind != "duplicates" else (
            "exact_duplicate" if links.exact_group[m] == links.exact_group[reference] else "near_duplicate")
        removed.append(_removal(m, reason, gid, int(labels[m]), reference, links))
    return Group(gid, kind, members.tolist(), member_labels.tolist(), kept), removed


def _majority(members: np.ndarray, member_labels: np.ndarray) -> int | None:
    """The first member carrying the majority label; None on a tie (then the whole group goes)."""
    counts = Counter(member_labels.tolist()).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    return int(members[member_labels == counts[0][0]][0])


def _removal(m: int, reason: str, gid: int, label: int, ref: int, links: Links) -> Removal:
    if m == ref:
        return Removal(m, reason, gid, label, 0, 0, 0.0)
    p = int(hashing.popcount(links.phash[m] ^ links.phash[ref]))
    d = int(hashing.popcount(links.dhash[m] ^ links.dhash[ref]))
    pix = float(np.abs(links.thumbs[m] - links.thumbs[ref]).mean())
    return Removal(m, reason, gid, label, p, d, round(pix, 3))


def outlier_scores(colour: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How unlike its class each image is: robust z-distance of colour features (from `colour_thumbnails`) to the
    class medians, scaled by the class MAD."""
    feats = _colour_features(colour)
    scores = np.zeros(len(colour), np.float32)
    for c in np.unique(labels):
        rows = labels == c
        med = np.median(feats[rows], axis=0)
        mad = np.median(np.abs(feats[rows] - med), axis=0) * 1.4826 + 1e-3
        z = np.minimum(np.abs(feats[rows] - med) / mad, 20.0)  # cap so one wild feature cannot dominate
        scores[rows] = np.sqrt((z**2).mean(axis=1))
    return scores


def _colour_features(colour: np.ndarray) -> np.ndarray:
    """A 64-bin joint colour histogram of every 2nd thumbnail pixel plus channel means and standard deviations."""
    px = np.ascontiguousarray(colour[:, ::2, ::2]).reshape(len(colour), -1, 3)
    q = np.minimum(px, 255).astype(np.int32) >> 6
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2] + 64 * np.arange(len(px), dtype=np.int32)[:, None]
    hist = np.bincount(codes.ravel(), minlength=64 * len(px)).reshape(len(px), 64) / px.shape[1]
    return np.concatenate([hist, px.mean(axis=1) / 255, px.std(axis=1) / 255], axis=1).astype(np.float32)
