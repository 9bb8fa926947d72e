"""The seeded corruption suite behind `simulate --shift` (DESIGN.md section 5), and its summary.

The families, their severity tables and their code live in `toolkit.corruptions` (training's `corrupt` stage uses
the same ones). The default suite is the eleven MedMNIST-C-like families at severities 1-5; it runs in the parent
process, and every set is a pure function of (images, family, severity, seed).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from toolkit.corruptions import FAMILIES, MEDMNIST_C, PARAMS, SEVERITIES, corrupt

__all__ = ["CORRUPTIONS", "FAMILIES", "PARAMS", "SEVERITIES", "corrupt", "input_name", "iter_suite", "seen_in_training", "summarize"]

# The default suite: 55 sets (11 families x 5 severities). The other families in toolkit.corruptions (noise,
# colour cast, gamma, haze) are for training and benchmarks: adding them here costs 25 more sets per run.
CORRUPTIONS = MEDMNIST_C


def iter_suite(
    images: np.ndarray,
    seed: int = 0,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield `(name, severity, corrupted images)` for every family and severity, one set at a time."""
    for name in corruptions:
        for severity in severities:
            yield name, severity, corrupt(images, name, severity, seed)


def input_name(name: str, severity: int) -> str:
    """The key a corrupted set travels under to the child process."""
    return f"shift/{name}/{severity}"


def summarize(clean_accuracy: float, table: dict[str, dict[int, float]], trained: Sequence[str] | None = None) -> dict:
    """Clean accuracy, the mean over every (family, severity), the drop, per-family means and the worst family; with
    `trained` (the families training drew, None = unknown) each family's `seen_in_training` and the unseen mean."""
    per_family = {name: float(np.mean(list(sev.values()))) for name, sev in table.items()}
    worst = min(per_family, key=per_family.get) if per_family else None
    seen = seen_in_training(table, trained)
    mean = _mean(table, list(table))
    return {
        "clean_accuracy": float(clean_accuracy),
        "mean_accuracy": mean,
        "drop": float(clean_accuracy) - mean,
        "per_corruption_mean": per_family,
        "worst_corruption": worst,
        "table": {name: {str(s): float(a) for s, a in sev.items()} for name, sev in table.items()},
        "severities": list(SEVERITIES),
        "trained_families": None if trained is None else sorted(trained),
        "seen_in_training": seen,
        "seen_mean_accuracy": _mean(table, [n for n, v in seen.items() if v is True]),
        "unseen_mean_accuracy": _mean(table, [n for n, v in seen.items() if v is False]),
    }


def seen_in_training(families: Iterable[str], trained: Sequence[str] | None) -> dict[str, bool | None]:
    """{family: drawn by training's corrupt stage}; every value None when what training drew is unknown."""
    return {name: None if trained is None else name in set(trained) for name in families}


def _mean(table: dict[str, dict[int, float]], families: list[str]) -> float | None:
    """The mean over every (family, severity) of `families`; NaN for an empty table, None for no such family."""
    values = [acc for name in families for acc in table[name].values()]
    if not values:
        return float("nan") if not table else None
    return float(np.mean(values))
