"""Choosing a TTA mode by measurement (issue 11): the one rule `simulate` (its TTA comparison) and
`build-submission --tta auto` both apply, so they can never disagree about which mode is better.

TTA is not assumed to help: on small medical images it often lowers accuracy, and on data whose label depends on
orientation (no declared invariance) a flip can turn one class into another. A mode wins only by the measured
accuracy, and a more expensive mode (more views) must beat a cheaper one by more than TIE_POINTS to be chosen.
"""

from __future__ import annotations

from typing import Mapping

from toolkit.tta import TTA_VIEWS

TIE_POINTS = 0.1  # accuracy points within which two modes count as equal: the cheaper (fewer views) wins


def tta_score(row: Mapping[str, float | None]) -> float:
    """One number per mode: the mean of its clean accuracy and, where measured, its shifted mean accuracy."""
    values = [v for v in (row.get("clean"), row.get("shifted")) if v is not None]
    if not values:
        raise ValueError("a TTA comparison row needs a 'clean' or 'shifted' accuracy")
    return float(sum(values) / len(values))


def choose_tta(scores: Mapping[str, Mapping[str, float | None]]) -> tuple[str, str]:
    """(best mode, one-line reason) for `scores` = {mode: {"clean": accuracy, "shifted": accuracy or None}}."""
    modes = sorted((m for m in scores if m in TTA_VIEWS), key=lambda m: TTA_VIEWS[m])
    if not modes:
        raise ValueError(f"no known TTA mode among {sorted(scores)}; expected some of {sorted(TTA_VIEWS)}")
    best = modes[0]
    for mode in modes[1:]:
        if tta_score(scores[mode]) > tta_score(scores[best]) + TIE_POINTS / 100:
            best = mode
    described = ", ".join(f"{m} {100 * tta_score(scores[m]):.2f}%" for m in modes)
    basis = "mean of clean and shifted accuracy" if any(scores[m].get("shifted") is not None for m in modes) else "clean accuracy"
    return best, (f"{best}: best {basis} ({described}); a mode with more views must win by more than {TIE_POINTS} point")
