"""Classification metrics (numpy only, importable without TensorFlow) and the two run-dir plots.

`simulate` and the reports reuse these functions, so they take plain integer label arrays and return plain
Python numbers and lists that serialise to JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    k = num_classes if num_classes is not None else int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches (0.0 for empty input)."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else 0.0


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def balanced_accuracy(y_true, y_pred, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in y_true."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    stats = per_class(cm)
    present = stats["support"] > 0
    return float(stats["recall"][present].mean()) if present.any() else 0.0


def macro_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in y_true or y_pred."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    stats = per_class(cm)
    seen = (stats["support"] > 0) | (cm.sum(axis=0) > 0)
    return float(stats["f1"][seen].mean()) if seen.any() else 0.0


def classification_metrics(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Everything the run dir and reports show: accuracy, balanced accuracy, macro F1, per class, confusion matrix."""
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    stats = per_class(cm)
    classes = {
        name: {
            "precision": float(stats["precision"][i]),
            "recall": float(stats["recall"][i]),
            "f1": float(stats["f1"][i]),
            "support": int(stats["support"][i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(cm.sum()),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, k),
        "macro_f1": macro_f1(y_true, y_pred, k),
        "per_class": classes,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def plot_confusion_matrix(cm, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Write a row-normalised confusion-matrix heat map with raw counts in the cells (PNG)."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    k = len(class_names)
    size = max(4.0, 0.6 * k + 2.5)
    fig = _figure(size, size)
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_learning_curves(history: dict, path: str | Path, phase_boundary: int | None = None) -> Path:
    """Write `learning_curves_figure` as a PNG."""
    return save_figure(learning_curves_figure(history, phase_boundary), path)


def learning_curves_figure(history: dict, phase_boundary: int | None = None):
    """Loss and accuracy per epoch (train and validation) and, when the history has it, the learning rate.

    Epoch ticks are integers; the best epoch (highest validation accuracy, the weights the run keeps) is a vertical
    line with its value; a dotted line marks the start of phase 2.
    """
    from matplotlib.ticker import MaxNLocator

    lrs = [v for v in history.get("lr") or [] if v is not None]
    fig = _figure(15 if lrs else 10, 4)
    axes = fig.subplots(1, 3 if lrs else 2)
    best = best_epoch(history)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key) or []
            if values:
                ax.plot(_epochs(history, values), values, style, marker="o", markersize=3, label=(prefix + key))
        ax.set_title(key)
    if lrs:
        values = history["lr"]
        epochs, values = zip(*[(e, v) for e, v in zip(_epochs(history, values), values) if v is not None])
        axes[2].plot(epochs, values, "-", marker="o", markersize=3, color="tab:green", label="learning rate")
        axes[2].set_yscale("log" if min(values) > 0 and max(values) / min(values) > 20 else "linear")
        axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        if phase_boundary:
            ax.axvline(phase_boundary + 0.5, color="grey", linestyle=":", label="phase 2")
        if best is not None:
            ax.axvline(best[0], color="tab:red", linewidth=1, alpha=0.7, label=f"best epoch {best[0]} (val acc {best[1]:.3f})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return fig


def best_epoch(history: dict) -> tuple[int, float] | None:
    """(epoch, validation accuracy) of the first epoch with the highest validation accuracy, as training keeps it."""
    values = history.get("val_accuracy") or []
    scored = [(v, -k) for k, v in enumerate(values) if v is not None]
    if not scored:
        return None
    value, k = max(scored)
    return _epochs(history, values)[-k], float(value)


def _epochs(history: dict, values: list) -> list[int]:
    """The epoch number of each value: the history's own `epoch` column when it matches, else 1..n."""
    epochs = history.get("epoch") or []
    return [int(e) for e in epochs] if len(epochs) == len(values) else list(range(1, len(values) + 1))


def _labels(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of class indices, got shape {arr.shape}")
    return arr.astype(np.int64)


def _figure(width: float, height: float):
    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend and state alone.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_figure(fig, path: str | Path) -> Path:
    """Lay out `fig` and write it atomically as a PNG at `path`."""
    from toolkit.fsutil import atomic_path

    path = Path(path)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
