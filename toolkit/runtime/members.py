"""`simulate` on an ensemble zip: every member scored alone beside the ensemble, inside the same child run.

A cbtool ensemble's model.py (templates/ensemble.py.tmpl) has the module global `MEMBER` (None = the weighted
ensemble). For each member the child sets it to the member's index around an extra predict of the graded held-out set
(and, with --shift, of every corrupted set), then restores it: the networks are loaded once, and the extras are timed
apart from the grader's pass and never fail the submission (the same mechanism as `simulate --compare-tta`).
"""

from __future__ import annotations

import re

import numpy as np

from toolkit.runtime import scoring
from toolkit.runtime.inputs import Plan
from toolkit.submission_zip import SubmissionZip

PREFIX = "member/"
_MEMBER_GLOBAL = re.compile(r"^MEMBER\s*=\s*None\b", re.M)


def ensemble_members(sub: SubmissionZip) -> list[dict]:
    """The members a cbtool ensemble zip's manifest lists (in model.py's order); [] for any other zip."""
    members = (sub.manifest or {}).get("members")
    if not isinstance(members, list) or len(members) < 2 or not _MEMBER_GLOBAL.search(sub.model_py or ""):
        return []
    return [m for m in members if isinstance(m, dict)]


def input_name(member: dict, source: str, plan: Plan) -> str:
    """The extra input of `source` (the graded set or a "shift/..." set) predicted by `member` alone."""
    return f"{PREFIX}{member['name']}/" + ("clean" if source == plan.graded else source)


def add_members(plan: Plan, members: list[dict]) -> None:
    """Add the graded set and every corrupted set again for each member alone, costed by its share of the views."""
    total = sum(int(m.get("tta_views") or 1) for m in members) or 1
    for index, member in enumerate(members):
        for source in [plan.graded, *(plan.shift_names or {})]:
            name = input_name(member, source, plan)
            plan.add(name, plan.inputs[source])
            plan.overrides[name] = {"MEMBER": index}
            plan.cost[name] = int(member.get("tta_views") or 1) / total


def score(outcome, plan: Plan, members: list[dict], labels: np.ndarray, num_classes: int) -> list[dict]:
    """One row per member: name, variant, input size, TTA, weight, clean accuracy and (with --shift) the mean over the
    corrupted sets and per corruption family (`shift_by_family`); a member the child could not answer in full carries
    `skipped` instead of numbers."""
    predict_s = (outcome.timing or {}).get("predict_s") or {}
    rows = []
    for member in members:
        model = member.get("model") or {}
        row = {"name": member["name"], "variant": model.get("variant"), "input_size": model.get("input_size"),
               "tta": member.get("tta"), "weight": member.get("weight"), "clean": None, "shifted": None,
               "predict_s": predict_s.get(input_name(member, plan.graded, plan))}
        rows.append(row)
        found = scoring.extra_accuracies(outcome, plan, lambda source, m=member: input_name(m, source, plan), labels,
                                         num_classes, what=f"predict with MEMBER = {member['name']}")
        if "skipped" in found:
            row["skipped"] = found["skipped"]
            continue
        row.update(clean=found["clean"], shifted=found["shifted"])
        if found["by_source"]:  # the suite's families, each the mean over its severities (as the ensemble's shift table)
            by_family: dict[str, list[float]] = {}
            for source, accuracy in found["by_source"].items():
                by_family.setdefault(plan.shift_names[source][0], []).append(accuracy)
            row["shift_by_family"] = {family: float(np.mean(v)) for family, v in by_family.items()}
    return rows


def summary(rows: list[dict], ensemble_clean: float, ensemble_shifted: float | None) -> dict:
    """The members' table with the ensemble's own numbers and how they compare with the members' mean and best."""
    scored = [r for r in rows if r["clean"] is not None]
    out = {"members": rows, "ensemble": {"clean": ensemble_clean, "shifted": ensemble_shifted}}
    if scored:
        out["members_mean"] = {"clean": float(np.mean([r["clean"] for r in scored])),
                               "shifted": (float(np.mean([r["shifted"] for r in scored]))
                                           if all(r["shifted"] is not None for r in scored) else None)}
        out["best_member"] = max(scored, key=lambda r: r["clean"])["name"]
    return out
