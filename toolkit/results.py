"""Typed results: what every command produces, as dataclasses that `--json`, the text output and the HTML report
all render from.

Each result serialises with `to_dict()` to the JSON keys the command has always printed, plus `schema_version`
(bumped when a key changes meaning; new keys are added without a bump). Nested results and `Issue`s serialise
through their own `to_dict()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

SCHEMA_VERSION = 1


def plain(value: Any) -> Any:
    """`value` with every dataclass (a result, an Issue) turned into its dict, recursively."""
    if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass
class Result:
    """Base of the typed results: `to_dict()` = the fields, nested results as dicts, and schema_version."""

    schema_version: ClassVar[int] = SCHEMA_VERSION

    def to_dict(self) -> dict:
        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["schema_version"] = self.schema_version
        return out


NEAR_CHANCE_FACTOR = 1.5  # at most 1.5x the chance level ...
NEAR_CHANCE_SHARE = 0.25  # ... or a quarter of the way from chance to 100%, whichever is lower


def chance_level(labels: Any, n_classes: int) -> float:
    """The accuracy of always answering the most frequent class of `labels` (at least 1/n_classes): the floor any
    reported accuracy is compared with."""
    import numpy as np

    labels = np.asarray(labels).reshape(-1)
    uniform = 1.0 / max(int(n_classes), 1)
    if labels.size == 0:
        return uniform
    counts = np.bincount(labels.astype(np.int64), minlength=max(int(n_classes), 1))
    return float(max(uniform, counts.max() / labels.size))


def near_chance_bound(chance: float) -> float:
    """The accuracy below which a score counts as near chance: NEAR_CHANCE_FACTOR x chance, or NEAR_CHANCE_SHARE of
    the way from chance to 100%, whichever is lower. The second keeps imbalanced or 2-class sets honest: with 62%
    healthy leaves, 1.5x chance would be 93% and flag a good model."""
    return min(NEAR_CHANCE_FACTOR * chance, chance + NEAR_CHANCE_SHARE * (1.0 - chance))


def near_chance(accuracy: float, chance: float) -> bool:
    """True when `accuracy` is below near_chance_bound(chance): a verdict that must not read as OK."""
    return accuracy < near_chance_bound(chance)


def chance_warning(what: str, accuracy: float, chance: float) -> str | None:
    """The one wording for a near-chance accuracy (None when it is not): such a score must not read as a success."""
    if not near_chance(accuracy, chance):
        return None
    return (f"{what} {100 * accuracy:.2f}% is near the chance level {100 * chance:.2f}% (below "
            f"{100 * near_chance_bound(chance):.2f}%; chance = always answering the most frequent class): the model has "
            "not learned these classes, or the labels are not the classes it predicts")


@dataclass
class Issue:
    """One finding: `code` (machine name), where (`file`, `symbol`), `expected`, `found`; `severity` error|warning."""

    code: str
    file: str
    symbol: str
    expected: str
    found: str
    severity: str = "error"

    @property
    def message(self) -> str:
        where = f"{self.file}: {self.symbol}" if self.symbol else self.file
        return f"{where}: expected {self.expected}; found {self.found}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "message": self.message}


@dataclass
class Failure:
    """Why a submission run failed: `kind` (import_error, load_error, fit_error, predict_error, bad_output, timeout,
    killed, exit), the `phase` (import|load|fit|predict), the message (explanations first), the child's stderr tail."""

    kind: str
    phase: str
    message: str
    stderr_tail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def images_within(time_limit_s: float, fixed_s: float, s_per_image: float) -> int:
    """How many images a time limit fits after its fixed costs (import, load, fit) at `s_per_image`: the one rule
    `simulate` (measured) and `build-submission --plan` (estimated) report."""
    return int(max(0.0, float(time_limit_s) - float(fixed_s)) / s_per_image) if s_per_image > 0 else 0
