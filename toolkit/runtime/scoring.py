"""Scoring a submission's predictions and checking them against the grader's output contract.

The metrics themselves live in `toolkit.train.metrics` (numpy only), so training, simulate and the reports score
the same way. This module adds what only a grader cares about: is what `predict` returned a valid answer?
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from toolkit.train.metrics import classification_metrics

__all__ = ["BadOutput", "OutputCheck", "check_output", "check_outputs", "consistency_warnings", "score"]


class BadOutput(Exception):
    """What `predict` returned breaks the contract; the message says what was expected, found, and the fix."""


@dataclass
class OutputCheck:
    """Predictions validated as int64 (n,) class indices, plus warnings that do not fail the submission."""

    predictions: np.ndarray
    warnings: list[str] = field(default_factory=list)


def check_output(value, n: int, num_classes: int, what: str = "predict(X)") -> OutputCheck:
    """Validate one `predict` result for a batch of `n` images: shape (n,), integer class indices in range.

    Raises `BadOutput` for one-hot rows, probabilities, a wrong length, a wrong shape, non-numbers or indices out of
    range. Floats holding whole numbers pass with a warning (the grader compares them equal to the labels).
    """
    if value is None:
        raise BadOutput(f"{what} returned None; return a numpy array of class indices of shape ({n},)")
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise BadOutput(f"{what} returned {arr.dtype} values; expected integer class indices of shape ({n},)")
    if arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] > 1:
        raise BadOutput(_two_d_message(arr, n, num_classes, what))
    if arr.ndim != 1:
        raise BadOutput(
            f"{what} returned shape {arr.shape}; expected ({n},) (one class index per image)"
            + ("; flatten it with .reshape(-1)" if arr.size == n else "")
        )
    if arr.shape[0] != n:
        raise BadOutput(f"{what} returned {arr.shape[0]} predictions for {n} images; expected shape ({n},)")
    warnings = []
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise BadOutput(_float_message(arr, n, what))
        warnings.append(f"{what} returned {arr.dtype} values; they are whole numbers, but return integers (np.argmax(...))")
    indices = arr.astype(np.int64)
    if n and (indices.min() < 0 or indices.max() >= num_classes):
        raise BadOutput(
            f"{what} returned class indices from {indices.min()} to {indices.max()}; expected 0..{num_classes - 1} "
            f"({num_classes} classes)"
        )
    return OutputCheck(indices, warnings)


def check_outputs(outputs: dict, shapes: dict, num_classes: int) -> dict[str, OutputCheck]:
    """`check_output` for every input set (`shapes`: name -> (shape, dtype)); BadOutput names the first bad one."""
    checked = {}
    for name, (shape, dtype) in shapes.items():
        if name not in outputs:
            raise BadOutput(f"predict returned nothing for input {name!r}")
        what = f"predict(X {dtype} of shape {shape}{'' if not name.startswith('shift/') else ', ' + name})"
        checked[name] = check_output(outputs[name], shape[0], num_classes, what=what)
    return checked


def consistency_warnings(checked: dict[str, OutputCheck], plan, reference: np.ndarray) -> list[str]:
    """Predictions that change with the input dtype or the batch (one image, an odd batch) for the same images."""
    from toolkit.runtime.inputs import ODD, SINGLE

    warnings = []
    preds = [checked[plan.clean[d]].predictions for d in plan.clean]
    if len(preds) > 1 and not np.array_equal(preds[0], preds[1]):
        differ = int(np.sum(preds[0] != preds[1]))
        warnings.append(f"predictions differ between the {' and '.join(plan.clean)} inputs on {differ} images: "
                        "the grader's dtype is not stated, so the model should not depend on it")
    for name, n in ((SINGLE, 1), (ODD, plan.odd_n)):
        if name in checked and not np.array_equal(checked[name].predictions, reference[:n]):
            warnings.append(f"predict on {n} image(s) gave different classes than on the whole set for the same images: "
                            "the prediction depends on the batch (batch statistics, padding, or randomness)")
    return warnings


def extra_accuracies(outcome, plan, name_of, labels: np.ndarray, num_classes: int, what: str) -> dict:
    """Score simulate's extra predictions of one override (a TTA mode, an ensemble member alone): the graded set and
    every corrupted set, `name_of(source)` naming each extra input. {"clean", "shifted", "by_source"} (by_source: the
    corrupted sets' accuracies), or {"skipped": why} when the child could not answer one set or answered it badly."""
    accuracies = {}
    try:
        for source in [plan.graded, *(plan.shift_names or {})]:
            name = name_of(source)
            if name not in outcome.outputs:
                return {"skipped": outcome.skipped.get(name) or f"no output for {name}"}
            y = labels if source == plan.graded else labels[plan.shift_idx]
            predictions = check_output(outcome.outputs[name], plan.n(name), num_classes, what=what).predictions
            accuracies[source] = float(np.mean(predictions == y))
    except BadOutput as exc:
        return {"skipped": str(exc)}
    clean = accuracies.pop(plan.graded)
    return {"clean": clean, "shifted": float(np.mean(list(accuracies.values()))) if accuracies else None,
            "by_source": accuracies}


def _two_d_message(arr: np.ndarray, n: int, num_classes: int, what: str) -> str:
    values = arr.astype(np.float64)
    rows_sum_to_one = np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
    in_unit = bool(values.size) and values.min() >= 0 and values.max() <= 1
    if in_unit and np.all((values == 0) | (values == 1)) and rows_sum_to_one:
        kind = "one-hot rows"
    elif in_unit and rows_sum_to_one:
        kind = "class probabilities (softmax rows)"
    else:
        kind = "a score per class (logits)"
    return (
        f"{what} returned {kind} of shape {arr.shape}; the grader expects class indices of shape ({n},), never "
        f"one-hot. Return np.argmax(output, axis=-1)"
    )


def _float_message(arr: np.ndarray, n: int, what: str) -> str:
    finite = arr[np.isfinite(arr)]
    if finite.size < arr.size:
        return f"{what} returned NaN or infinite values; expected integer class indices of shape ({n},)"
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        return (
            f"{what} returned fractional values in [0, 1] of shape ({n},): probabilities, not class indices. "
            "Return integer class indices (for a sigmoid output: (p > 0.5).astype(int))"
        )
    return f"{what} returned non-integer values (e.g. {finite[:3].tolist()}); expected integer class indices"


def score(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix."""
    return classification_metrics(np.asarray(y_true), np.asarray(y_pred), class_names)
