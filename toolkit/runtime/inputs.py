"""The input sets simulate hands the child: the held-out set in each of the contract's dtypes, one image and an odd
batch (the contract says any n), with --shift every corrupted set, parked on disk and memory-mapped, and with
--compare-tta the same sets again under the other TTA modes (extras: `overrides`, never part of the grader's pass)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.runtime import shift as shift_suite
from toolkit.runtime.profiles import Profile

SINGLE, ODD = "contract/single", "contract/odd"


@dataclass
class Plan:
    inputs: dict[str, np.ndarray]
    clean: dict[str, str]  # dtype -> input name
    odd_n: int
    shift_idx: np.ndarray | None = None
    shift_names: dict[str, tuple[str, int]] | None = None  # input name -> (family, severity)
    shift_s: float = 0.0
    seed: int = 0
    shapes: dict[str, tuple[tuple, str]] = field(default_factory=dict)  # input name -> (shape, dtype)
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)  # extra input -> model.py globals to set
    cost: dict[str, float] = field(default_factory=dict)  # extra input -> its predict cost per image vs the zip's own
    tta_mode: str | None = None  # the submission's own TTA mode when the comparison is planned

    def add(self, name: str, array: np.ndarray) -> None:
        self.inputs[name] = array
        self.shapes[name] = (tuple(array.shape), str(array.dtype))

    def n(self, name: str) -> int:
        return int(self.shapes[name][0][0])

    @property
    def required(self) -> dict[str, tuple[tuple, str]]:
        """The shapes of the inputs every submission must answer (the extras left out)."""
        return {name: shape for name, shape in self.shapes.items() if name not in self.overrides}

    @property
    def graded(self) -> str:
        """The input the grader's own pass predicts: the held-out set in the contract's first dtype."""
        return next(iter(self.clean.values()))


def plan_inputs(images: np.ndarray, profile: Profile, options, scratch: Path, log) -> Plan:
    dtypes = list(profile.contract.dtypes)
    first = dtypes[0]
    plan = Plan({}, {f"{d}": f"clean/{d}" for d in dtypes}, 1)
    for dtype, name in plan.clean.items():
        plan.add(name, images.astype(dtype))
    n = len(images)
    plan.odd_n = min(n if n % 2 else n - 1, 7)  # the contract says any n: try 1 and an odd batch besides the set
    plan.add(SINGLE, images[:1].astype(first))
    if plan.odd_n > 1:
        plan.add(ODD, images[: plan.odd_n].astype(first))
    if options.shift:
        _plan_shift(plan, images, first, options, scratch, log)
    return plan


def _plan_shift(plan: Plan, images: np.ndarray, dtype: str, options, scratch: Path, log) -> None:
    """Corrupt a seeded sample, one set at a time, each parked on disk and memory-mapped: the parent never holds
    the whole suite (55 sets; x4 in float32 for the 2023 profile) in memory."""
    n = len(images)
    k = n if not options.shift_images else min(n, int(options.shift_images))
    rng = np.random.default_rng(options.seed)
    idx = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
    if log:
        log(f"corrupting {k} images x {len(shift_suite.CORRUPTIONS)} corruptions x {len(shift_suite.SEVERITIES)} severities (seed {options.seed})")
    started = time.perf_counter()
    names = {}
    for family, severity, corrupted in shift_suite.iter_suite(images[idx], seed=options.seed):
        name = shift_suite.input_name(family, severity)
        path = scratch / f"{family}_{severity}.npy"
        np.save(path, corrupted.astype(dtype, copy=False), allow_pickle=False)
        plan.add(name, np.load(path, mmap_mode="r"))
        names[name] = (family, severity)
    plan.shift_idx, plan.shift_names, plan.shift_s, plan.seed = idx, names, time.perf_counter() - started, options.seed


def hard_limit(time_limit: float, plan: Plan) -> float:
    """The kill limit for the one child run: the grader's limit stretched by the inputs beyond the grader-equivalent
    pass (the other dtypes, the single image and odd batch, the corruption suite, the other TTA modes weighted by their
    views); the grader's own limit is judged
    afterwards on import + load + fit + predict of the held-out set in the contract's first dtype."""
    graded = plan.n(plan.graded)
    total = sum(plan.n(name) * plan.cost.get(name, 1.0) for name in plan.shapes)
    return time_limit if total <= graded else time_limit * total / max(graded, 1) + min(30.0, time_limit)
