"""`simulate --compare-tta`: the submission's own network scored under every TTA mode, inside the grader sandbox.

The child imports the zip's model.py once (the one loader); for each other mode of `toolkit.tta.TTA_VIEWS` it sets
model.py's module global `TTA` around an extra predict of the same held-out images (and, with --shift, the same
corrupted sets), then restores it. The submission's own mode is simply the normal run. The extras are timed apart
from the grader's pass and never fail the submission. Which mode is best is `toolkit.tta_choice.choose_tta`'s rule,
the one `build-submission --tta auto` applies.
"""

from __future__ import annotations

import re

import numpy as np

from toolkit.runtime import scoring
from toolkit.runtime.inputs import Plan
from toolkit.submission_zip import SubmissionZip
from toolkit.tta import TTA_VIEWS
from toolkit.tta_choice import choose_tta

PREFIX = "tta/"
_TTA_GLOBAL = re.compile(r"""^TTA\s*=\s*['"](\w+)['"]\s*(?:#.*)?$""", re.M)
_FORMAT_GLOBAL = re.compile(r"^FORMAT\s*=", re.M)
NEEDS_CBTOOL = ("the comparison needs a cbtool-built zip (a manifest.json cbtool wrote and a model.py with the "
                "module globals TTA and FORMAT); {why}: nothing compared")


def submission_tta(sub: SubmissionZip) -> tuple[str | None, str]:
    """(the zip's own TTA mode, "") for a cbtool-built zip; (None, why it cannot be compared) for any other."""
    text = sub.model_py or ""
    mode = _TTA_GLOBAL.search(text)
    if not (sub.manifest or {}).get("cbtool_submission"):
        return None, NEEDS_CBTOOL.format(why="this zip's manifest does not say cbtool built it")
    if isinstance((sub.manifest or {}).get("members"), list):
        return None, ("an ensemble: each member has its own TTA mode (the manifest's members); compare modes on a "
                      "member's own zip, or rebuild with one mode per member (--tta d4,flip,none)")
    if mode is None or not _FORMAT_GLOBAL.search(text):
        return None, NEEDS_CBTOOL.format(why="this model.py has no module-level TTA = '...' and FORMAT = ...")
    if mode.group(1) not in TTA_VIEWS:
        return None, f"model.py sets TTA = {mode.group(1)!r}, not one of {', '.join(TTA_VIEWS)}: nothing compared"
    return mode.group(1), ""


def add_modes(plan: Plan, own: str) -> None:
    """Add the graded held-out set and every corrupted set again under each other mode (the same arrays, so the
    sandbox writes them once), weighted by their views in the child's kill limit."""
    plan.tta_mode = own
    sources = [plan.graded, *(plan.shift_names or {})]
    for mode in (m for m in TTA_VIEWS if m != own):
        for source in sources:
            name = input_name(mode, source, plan)
            plan.add(name, plan.inputs[source])
            plan.overrides[name] = {"TTA": mode}
            plan.cost[name] = TTA_VIEWS[mode] / TTA_VIEWS[own]


def input_name(mode: str, source: str, plan: Plan) -> str:
    """The extra input of `source` (the graded set or a "shift/..." set) under `mode`."""
    return f"{PREFIX}{mode}/" + ("clean" if source == plan.graded else source)


def salvage(outcome, plan: Plan) -> None:
    """A child killed or crashed during the extras, after every input the grader would ask for came back: the
    submission did not fail; the unanswered extras are skipped with the reason."""
    failure = outcome.failure
    if failure is None or not plan.overrides or any(name not in outcome.outputs for name in plan.required):
        return
    for name in plan.overrides:
        if name not in outcome.outputs:
            outcome.skipped.setdefault(name, f"{failure.kind}: {failure.message.splitlines()[0]}")
    outcome.failure, outcome.status = None, "ok"


def compare(outcome, plan: Plan, labels: np.ndarray, own: np.ndarray, shift: dict | None, num_classes: int) -> dict:
    """{"modes": {mode: {clean, shifted, views, predict_s}}, "submission", "best", "reason"}: the measured table and
    the choice. `own`: the zip's checked predictions of the graded set; `shift`: its --shift summary (or None). A
    mode the child could not answer in full is listed with `skipped` and left out of the choice."""
    predict_s = (outcome.timing or {}).get("predict_s") or {}
    modes = {plan.tta_mode: {"clean": float(np.mean(own == labels)), "shifted": (shift or {}).get("mean_accuracy"),
                             "views": TTA_VIEWS[plan.tta_mode], "predict_s": predict_s.get(plan.graded)}}
    for mode in (m for m in TTA_VIEWS if m != plan.tta_mode):
        modes[mode] = _mode_row(outcome, plan, mode, labels, num_classes, predict_s)
    best, reason = choose_tta({m: row for m, row in modes.items() if row["clean"] is not None})
    return {"modes": {m: modes[m] for m in TTA_VIEWS}, "submission": plan.tta_mode, "best": best, "reason": reason}


def _mode_row(outcome, plan: Plan, mode: str, labels: np.ndarray, num_classes: int, predict_s: dict) -> dict:
    row = {"clean": None, "shifted": None, "views": TTA_VIEWS[mode], "predict_s": predict_s.get(input_name(mode, plan.graded, plan))}
    found = scoring.extra_accuracies(outcome, plan, lambda source: input_name(mode, source, plan), labels, num_classes,
                                     what=f"predict with TTA = {mode!r}")
    found.pop("by_source", None)
    return {**row, **found}


def not_compared(why: str) -> dict:
    """The comparison of a zip that cannot be compared: no modes, no choice, the reason."""
    return {"modes": {}, "submission": None, "best": None, "reason": why}


def tta_line(comparison: dict) -> str:
    """The one line the terminal and the report print about the comparison."""
    own, best = comparison.get("submission"), comparison.get("best")
    if own is None or best is None:
        return f"TTA: {comparison.get('reason')}"
    if best == own:
        return f"TTA: the submission uses {own}; {own} is the best measured ({comparison['reason']})"
    return (f"TTA: the submission uses {own}; {best} scores better here ({comparison['reason']}): rebuild with "
            f"--tta {best}")
