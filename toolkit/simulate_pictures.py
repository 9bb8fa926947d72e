"""The simulate report's pictures: the corruption heat map, one held-out image under every corruption, and the
Grad-CAM sheet of misclassified held-out images. Each writes one PNG; `toolkit/simulate_report.py` places them.

The corruptions come from `toolkit.corruptions` (the suite's own definition); Grad-CAM from `toolkit.gradcam`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import CbtoolError
from toolkit.train.metrics import save_figure

STRIP_ROWS_MAX = 16  # families on the strip: every family of the suite fits


@dataclass
class HeldOut:
    """The held-out images and their labels in the submission's class indices (as simulate scored them)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]


def load_heldout(result, allow_pickle: bool = False) -> HeldOut:
    """Re-read `result.data` and map its classes to the submission's as simulate did (`--class-map` included)."""
    from toolkit.data.io import load_dataset
    from toolkit.submission_zip import SubmissionZip

    data = load_dataset(result.data, allow_pickle=allow_pickle)
    labels, names = data.labels, list(result.class_names or data.class_names)
    if Path(result.submission).is_file():
        from toolkit.runtime.heldout import match_classes

        with SubmissionZip(result.submission) as sub:
            match = match_classes(data, result.data, sub.manifest, result.class_map)
        labels, names = match.labels, list(match.class_names)
    return HeldOut(data.images, np.asarray(labels).reshape(-1), names)


def plot_shift(shift: dict, path: str | Path, chance: float | None = None) -> Path:
    """A heat map of accuracy, family x severity (plus clean and mean columns), coloured by `heat_range`, each cell
    printed as a percentage."""
    from matplotlib.figure import Figure

    families = list(shift["table"])
    severities = [str(s) for s in shift["severities"]]
    clean = float(shift["clean_accuracy"])
    grid = np.array([[clean, *(shift["table"][f].get(s, np.nan) for s in severities), shift["per_corruption_mean"][f]] for f in families])
    low, high = heat_range(shift, chance)
    fig = Figure(figsize=(8, 0.42 * len(families) + 1.6))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdYlGn", vmin=low, vmax=high, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if np.isnan(value) else f"{100 * value:.1f}", ha="center", va="center", fontsize=8)
    seen = shift.get("seen_in_training") or {}
    ax.set_yticks(range(len(families)), labels=[f + {True: " (seen)", False: " (unseen)"}.get(seen.get(f), "") for f in families])
    ax.set_xticks(range(len(severities) + 2), labels=["clean", *(f"sev {s}" for s in severities), "mean"])
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="accuracy (red = " + ("chance level or below)" if low > 0 else "0)"))
    ax.set_title(f"Accuracy (%) under corruption; mean {100 * shift['mean_accuracy']:.1f}, clean {100 * clean:.1f}", pad=24)
    return save_figure(fig, path)


def heat_range(shift: dict, chance: float | None) -> tuple[float, float]:
    """(red, green) of the corruption heat map: green at the clean accuracy (or the best cell, when higher), red at the
    chance level (0 when unknown), so a model at or below chance shows red everywhere."""
    cells = [float(a) for per in shift["table"].values() for a in per.values()]
    low = float(chance) if chance is not None else 0.0
    return low, max([float(shift["clean_accuracy"]), *cells, low + 1e-6])


def corruption_strip(images: np.ndarray, families: list[str], path: str | Path, seed: int = 0, index: int = 0) -> Path:
    """Held-out image `index` clean and under each family at severities 1-5, one family a row."""
    from toolkit.corruptions import SEVERITIES, corrupt
    from toolkit.data.clean_report import contact_sheet, zoom

    image = np.asarray(images[index : index + 1], dtype=np.uint8)
    tiles, stack = [], []
    for family in families[:STRIP_ROWS_MAX]:
        stack.append(image[0])
        tiles.append((len(stack) - 1, [family, "clean"]))
        for severity in SEVERITIES:
            stack.append(corrupt(image, family, severity, seed)[0])
            tiles.append((len(stack) - 1, [family, f"severity {severity}"]))
    title = f"held-out image #{index} under each corruption of the suite (seed {seed}), severities {SEVERITIES[0]}-{SEVERITIES[-1]}"
    return contact_sheet(np.stack(stack), tiles, Path(path), title, columns=1 + len(SEVERITIES), scale=zoom(image))


def gradcam_sheet(result, heldout: HeldOut, path: str | Path):
    """The Grad-CAM sheet of the misclassified held-out images (toolkit.gradcam.Sheet; its note says why not)."""
    from toolkit.gradcam import misclassified_sheet

    predictions = getattr(result, "predictions", None)
    return misclassified_sheet(result.submission, heldout.images, heldout.labels, heldout.class_names, path,
                               predictions=None if predictions is None else np.asarray(predictions))


def safe_heldout(result, allow_pickle: bool) -> tuple[HeldOut | None, str]:
    """`load_heldout`, or None and the one-line reason the pictures that need the images are missing."""
    try:
        return load_heldout(result, allow_pickle), ""
    except CbtoolError as exc:
        return None, f"pictures of held-out images skipped: {exc}"
