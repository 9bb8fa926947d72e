"""`cbtool simulate`: run a submission as the hidden-test grader would, check its output, score it, estimate the shift.

Everything the submission sees goes through the one loader, `toolkit.runtime.sandbox.run_submission`, in a single
child run (TensorFlow is imported once): the held-out images in each of the profile's input forms, one single
image and one odd-sized batch (the contract says any n), and with `--shift` every corrupted set. The corruptions
are made here, in the parent; the child only sees arrays, as the grader's child would.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import ConfigError, UsageError
from toolkit.results import Failure, Result, chance_level, chance_warning, images_within
from toolkit.runtime import members as ensemble, scoring, shift as shift_suite, tta_compare
from toolkit.runtime.diagnose import cwd_warning, keras_load_hint, other_profile_hint, relative_path_hint
from toolkit.runtime.heldout import check_image_size, match_classes
from toolkit.runtime.inputs import Plan, hard_limit, plan_inputs
from toolkit.runtime.profiles import Profile
from toolkit.submission_zip import SubmissionZip

MEMORY_NOTE = (
    "The memory limit approximates the grader: cbtool watches the child's resident memory and kills it above the "
    "budget. Codabench sets no memory limit of its own, but its workers have finite memory and course graders ran "
    "out of it with heavy test-time augmentation."
)
KILLED_NOTE = (
    "This memory budget approximates the grader (cbtool kills the child when its resident memory passes it; "
    "Codabench's workers have finite memory but no stated limit): predict in bounded batches and avoid holding "
    "every test-time-augmentation view at once."
)
TIME_NOTE = ("The time limit is judged on the grader's own pass: import, model load, fit where the contract calls it, and "
             "one prediction of the held-out set in the contract's first dtype; simulate's extra probes are timed apart.")
FIT_IMAGES = 32  # held-out images handed to a contract's fit(X, y) when no training data is given


@dataclass
class SimulateResult(Result):
    """Everything one simulate run measured. `status` ok|failed; `failure` {kind, phase, message, stderr_tail}."""

    status: str
    submission: str
    data: str
    n_images: int
    class_names: list[str]
    profile: dict
    limits: dict
    inputs: dict
    seed: int
    versions: dict
    failure: Failure | None = None
    warnings: list[str] = field(default_factory=list)
    scores: dict | None = None
    scores_by_input: dict | None = None
    shift: dict | None = None
    timing: dict = field(default_factory=dict)
    peak_memory_mb: float | None = None
    sandbox: dict = field(default_factory=dict)
    report: dict | None = None  # the files `--report DIR` wrote
    chance_level: float | None = None  # the majority-class rate of the held-out labels (at least 1/K)
    near_chance: bool = False  # accuracy below toolkit.results.near_chance_bound: a warning, never an OK
    class_map: dict | None = None  # held-out class -> submission class, as --class-map gave it
    predictions: list[int] | None = None  # the scored clean predictions, per held-out image (the report's error sheet)
    tta_comparison: dict | None = None  # --compare-tta: {modes: {mode: {clean, shifted, views}}, submission, best, reason}
    members: dict | None = None  # an ensemble: {members: [{name, variant, clean, shifted, ...}], ensemble, members_mean}
    predict_s_per_image: float | None = None  # the grader's own predict pass / its images (TTA and every member included)
    images_within_time_limit: int | None = None  # images that fit the time limit after import + load (+ fit), at that rate

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, data: dict) -> SimulateResult:
        """A result read back from its `to_dict()` (details.json, `--json`), unknown keys ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(values.get("failure"), dict):
            values["failure"] = Failure(**{k: v for k, v in values["failure"].items() if k in Failure.__dataclass_fields__})
        return cls(**values)


@dataclass
class SimulateOptions:
    """What to run and how: limits default to the profile's; `shift_images` caps the images per corrupted set."""

    time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    shift: bool = False
    shift_images: int | None = 200
    seed: int = 0
    allow_pickle: bool = False
    class_map: dict[str, str] | None = None  # held-out class -> submission class (toolkit.runtime.heldout.parse_class_map)
    compare_tta: bool = False  # also predict under every other TTA mode (toolkit.runtime.tta_compare)


def parse_memory(text: str | None) -> int | None:
    """'4G', '512M', '1.5g', '800' (MB) -> megabytes; None stays None; anything else is a UsageError (exit 2)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", str(text))
    if not m:
        raise UsageError(f"--memory-limit must look like 4G, 512M or 800 (megabytes); found {text!r}")
    value, unit = float(m.group(1)), m.group(2).upper()
    mb = value * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mb < 1:
        raise UsageError(f"--memory-limit {text!r} is below 1 MB")
    return int(round(mb))


def simulate(
    zip_path: str | Path,
    data_path: str | Path,
    profile: Profile,
    options: SimulateOptions | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    findings: list | None = None,
) -> SimulateResult:
    """Run, check and score one submission on a held-out npz; return the result (status ok|failed).

    `progress(k, n)` follows the child through the n input sets (see `run_submission`). `findings`: `check`'s Issues
    for the same zip, carried into the result as warnings (the grader would still run the zip).
    """
    from toolkit.data.io import load_dataset

    options = options or SimulateOptions()
    zip_path = Path(zip_path)
    with SubmissionZip(zip_path) as sub:  # refuses a missing or unreadable zip before any work
        data = load_dataset(data_path, allow_pickle=options.allow_pickle)
        if len(data) == 0:
            raise ConfigError(f"{data_path}: the held-out set has no images")
        check_image_size(data.images, profile.contract, profile.name, data_path)
        match = match_classes(data, data_path, sub.manifest, options.class_map)
        data = dataclasses.replace(data, labels=match.labels, class_names=match.class_names)
        time_limit = float(options.time_limit_s or profile.time_limit_s)
        memory_limit = int(options.memory_limit_mb or profile.memory_limit_mb)
        with tempfile.TemporaryDirectory(prefix="cbtool-shift-") as scratch:
            plan = plan_inputs(data.images, profile, options, Path(scratch), log)
            own_tta, why_not = tta_compare.submission_tta(sub) if options.compare_tta else (None, "")
            if own_tta:
                tta_compare.add_modes(plan, own_tta)
            members = ensemble.ensemble_members(sub)
            if members:
                ensemble.add_members(plan, members)
            run = _run_as_grader(sub, profile, plan, _Run(time_limit, memory_limit, _fit_data(data, profile, options), log, progress))
            plan.inputs.clear()  # close the memory maps before their folder goes
        result = _base_result(zip_path, data_path, data, profile, time_limit, memory_limit, options, plan)
        static = [f"check: [{i.code}] {i.message}" for i in findings or []]
        result.class_map = match.class_map
        result.warnings += data.warnings + match.warnings + static + [w for w in run.warnings if not _said_by_check(w, run.outcome, findings or [])]
        result = _judge(result, run, plan, data, profile, sub, members)
        if why_not and result.ok:
            result.tta_comparison = tta_compare.not_compared(why_not)
        return result


@dataclass
class _Run:
    """How to run the child, and what came back (`outcome`, the parent's wall time, warnings about the run)."""

    time_limit: float
    memory_limit: int
    fit_data: tuple | None
    log: Callable[[str], None] | None
    progress: Callable[[int, int], None] | None
    outcome: object = None
    wall: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _run_as_grader(sub: SubmissionZip, profile: Profile, plan: Plan, run: _Run) -> _Run:
    """Run in the working directory the contract names; for an unknown one, from the program folder first and, when
    that fails only for a relative path, again inside the submission folder, reporting the difference."""
    cwd = profile.contract.cwd
    _child_run(sub, profile, plan, run, "submission" if cwd == "submission" else "program")
    outcome = run.outcome
    if cwd == "unknown" and outcome.failure is not None and relative_path_hint(outcome.failure.to_dict(), sub.top_level(),
                                                                                 profile, outcome.relative_paths):
        first = outcome.failure
        _child_run(sub, profile, plan, run, "submission")
        if run.outcome.failure is None:
            run.warnings.append(
                f"works only if the grader runs inside the submission folder: from another folder it fails ({first.kind}: "
                f"{first.message.splitlines()[0]}). Profile {profile.name} does not know where its grader runs (cwd "
                f"'unknown'). {relative_path_hint(first.to_dict(), sub.top_level(), profile, outcome.relative_paths)}")
        else:
            run.outcome = outcome
    if run.outcome.failure is None and run.outcome.cwd == "submission":
        warning = cwd_warning(run.outcome.relative_paths, sub.top_level(), profile)
        if warning:
            run.warnings.append(warning)
    return run


def _said_by_check(warning: str, outcome, findings: list) -> bool:
    """The run's relative-path warning when check already named every one of those files (one warning, not two)."""
    if not warning.startswith("model.py opened "):
        return False
    statics = " ".join(i.message for i in findings if i.code == "relative_path")
    return bool(outcome.relative_paths) and all(repr(p) in statics for p in outcome.relative_paths if p not in (".", ""))


def _child_run(sub: SubmissionZip, profile: Profile, plan: Plan, run: _Run, cwd: str) -> None:
    from toolkit.runtime.sandbox import run_submission

    started = time.perf_counter()
    run.outcome = run_submission(sub.path, profile, plan.inputs, time_limit_s=hard_limit(run.time_limit, plan),
                                 memory_limit_mb=run.memory_limit, log=run.log, progress=run.progress,
                                 fit_data=run.fit_data, cwd=cwd, overrides=plan.overrides)  # fmt: skip
    tta_compare.salvage(run.outcome, plan)
    run.wall = time.perf_counter() - started


def _judge(result: SimulateResult, run: _Run, plan: Plan, data, profile: Profile, sub: SubmissionZip,
           members: list[dict] = ()) -> SimulateResult:
    """The outcome against the contract and the time limit, then the scores."""
    outcome = run.outcome
    result.timing = _timing(outcome, plan, run.wall, result.limits["time_limit_s"])
    result.predict_s_per_image, result.images_within_time_limit = _budget(result.timing, plan, result.limits["time_limit_s"])
    result.peak_memory_mb = outcome.peak_memory_mb
    result.sandbox = {"python": outcome.python, "network_blocked": outcome.network_blocked, "stdout_tail": outcome.stdout_tail,
                      "cwd": outcome.cwd, "relative_paths": list(outcome.relative_paths)}
    result.versions = {**result.versions, **outcome.versions}  # what the child imported, not the host's
    if "fit" in profile.contract.methods:
        result.warnings.append(f"profile {profile.name}'s contract calls fit(X, y) before predict; with no training data "
                               f"given, simulate passed {min(FIT_IMAGES, len(data))} held-out images with their labels "
                               "(a submission that learns in fit would score optimistically here)")
    if outcome.status != "ok" or outcome.failure is not None:
        return _fail(result, _failure_dict(outcome.failure, outcome), sub, profile, outcome.relative_paths)
    over = _over_time(result.timing, result.limits["time_limit_s"])
    if over:
        return _fail(result, over, sub, profile)
    try:
        checked = scoring.check_outputs(outcome.outputs, plan.required, len(result.class_names))
    except scoring.BadOutput as exc:
        failure = {"kind": "bad_output", "phase": "predict", "message": str(exc), "stderr_tail": _tail(outcome)}
        return _fail(result, failure, sub, profile)
    _score(result, checked, data, plan, sub.manifest)
    if members:
        rows = ensemble.score(outcome, plan, list(members), data.labels, len(result.class_names))
        result.members = ensemble.summary(rows, float(np.mean(checked[plan.graded].predictions == data.labels)),
                                          (result.shift or {}).get("mean_accuracy"))
    if plan.tta_mode:
        result.tta_comparison = tta_compare.compare(outcome, plan, data.labels, checked[plan.graded].predictions, result.shift,
                                                    len(result.class_names))
    return result


def _fit_data(data, profile: Profile, options: SimulateOptions) -> tuple[np.ndarray, np.ndarray] | None:
    """What a contract's fit(X, y) gets: a seeded sample of the held-out set (simulate has no training data)."""
    if "fit" not in profile.contract.methods:
        return None
    k = min(FIT_IMAGES, len(data))
    idx = np.sort(np.random.default_rng(options.seed + 1).choice(len(data), size=k, replace=False))
    return data.images[idx].astype(profile.contract.dtypes[0]), data.labels[idx]


# --- outcome -> result ------------------------------------------------------------------------------------------


def _base_result(zip_path, data_path, data, profile, time_limit, memory_limit, options, plan) -> SimulateResult:
    return SimulateResult(
        status="ok",
        submission=str(zip_path),
        data=str(data_path),
        n_images=len(data),
        class_names=list(data.class_names),
        profile={"name": profile.name, "contract": profile.contract.key, "packages": list(profile.packages),
                 "input_dtypes": list(profile.contract.dtypes), "input_tensor": profile.contract.tensor_input,
                 "contract_spec": profile.contract.to_dict()},
        limits={"time_limit_s": time_limit, "memory_limit_mb": memory_limit, "note": f"{TIME_NOTE} {MEMORY_NOTE}"},
        inputs={name: {"n": shape[0], "dtype": dtype} for name, (shape, dtype) in plan.required.items() if not name.startswith("shift/")},
        seed=options.seed,
        versions=_host_versions(profile),
    )


def _host_versions(profile: Profile) -> dict:
    """cbtool's own version and the profile's pins; the child's imported versions replace the rest once it ran."""
    from toolkit.provenance import versions

    return {"cbtool": versions()["cbtool"], "runtime": ", ".join(profile.packages) or "current interpreter"}


def _timing(outcome, plan: Plan, wall: float, time_limit: float) -> dict:
    timing = dict(getattr(outcome, "timing", None) or {})
    predict = dict(timing.get("predict_s") or {})
    done = set(getattr(outcome, "outputs", None) or {})  # inputs whose predict returned
    clean_s = sum(predict.get(name, 0.0) for name in plan.clean.values())
    clean_n = sum(plan.n(name) for name in plan.clean.values() if name in done)
    done_s = sum(predict.get(name, 0.0) for name in plan.clean.values() if name in done)
    shift_s = sum(v for k, v in predict.items() if k.startswith("shift/"))
    extra = [k for k in predict if k in plan.overrides]
    phases = [timing.get(k) for k in ("import_s", "load_s", "fit_s")]
    graded = predict.get(plan.graded)
    out = {
        "import_s": timing.get("import_s"),
        "load_s": timing.get("load_s"),
        "fit_s": timing.get("fit_s"),
        "clean_predict_s": clean_s if predict else None,
        # what the grader itself would time: import + load (+ fit) + one predict over the held-out set
        "grader_pass_s": (sum(t or 0.0 for t in phases) + graded) if graded is not None else None,
        "probes_predict_s": sum(v for k, v in predict.items() if k != plan.graded and not k.startswith("shift/") and k not in extra) if predict else None,
        "predict_s": predict,
        "images_per_s": (clean_n / done_s) if done_s > 0 else None,
        "wall_s": wall,
    }
    if plan.shift_names:
        out.update(shift_predict_s=shift_s, shift_corrupt_s=plan.shift_s)
    # --compare-tta's and an ensemble's per-member extra predictions: never part of the grader's pass
    if any(k.startswith(tta_compare.PREFIX) for k in plan.overrides):
        out["tta_compare_predict_s"] = sum(predict[k] for k in extra if k.startswith(tta_compare.PREFIX))
    if any(k.startswith(ensemble.PREFIX) for k in plan.overrides):
        out["members_predict_s"] = sum(predict[k] for k in extra if k.startswith(ensemble.PREFIX))
    return out


def _budget(timing: dict, plan: Plan, time_limit: float) -> tuple[float | None, int | None]:
    """(seconds per image of the grader's own predict, images that fit the limit after its fixed costs)."""
    graded, n = (timing.get("predict_s") or {}).get(plan.graded), plan.n(plan.graded)
    if graded is None or n < 1 or graded <= 0:
        return None, None
    per_image = graded / n
    fixed = sum(timing.get(k) or 0.0 for k in ("import_s", "load_s", "fit_s"))
    return per_image, images_within(time_limit, fixed, per_image)


def _over_time(timing: dict, limit: float) -> dict | None:
    """The child ran under a stretched kill limit: judge the grader's limit on the grader-equivalent pass alone."""
    spent, phase = 0.0, None
    for key in ("import_s", "load_s", "fit_s", "grader_pass_s"):
        value = timing.get(key) or 0.0
        spent = value if key == "grader_pass_s" else spent + value
        phase = phase or (key.split("_")[0] if spent > limit else None)
    if phase is None:
        return None
    return {
        "kind": "timeout",
        "phase": "predict" if phase == "grader" else phase,
        "message": f"import, load and one prediction of the held-out set (the grader's own pass) took {spent:.1f} s, "
                   f"over the {limit:g} s limit; simulate's extra probes are timed separately and not counted",
        "stderr_tail": "",
    }


def _failure_dict(failure, outcome) -> dict:
    if failure is None:
        return {"kind": "exit", "phase": "unknown", "message": "the child reported failure without a reason", "stderr_tail": _tail(outcome)}
    return {
        "kind": getattr(failure, "kind", "exit"),
        "phase": getattr(failure, "phase", "unknown"),
        "message": getattr(failure, "message", str(failure)),
        "stderr_tail": getattr(failure, "stderr_tail", None) or _tail(outcome),
    }


def _tail(outcome) -> str:
    return getattr(outcome, "stderr_tail", "") or ""


def _fail(result: SimulateResult, failure: dict, sub: SubmissionZip, profile: Profile, opened: list[str] = ()) -> SimulateResult:
    """Mark the result failed; explanations first (Keras versions, the fitting profile), the raw message after."""
    first = [h for h in (keras_load_hint(failure, sub, profile), other_profile_hint(failure, sub, profile)) if h]
    hint = relative_path_hint(failure, sub.top_level(), profile, list(opened))
    message = "\n".join([*first, failure["message"], *([hint] if hint else [])])
    if failure["kind"] == "killed":
        message += f" (likely out of memory). {KILLED_NOTE}"
    result.status = "failed"
    result.failure = Failure(failure["kind"], failure["phase"], message, failure.get("stderr_tail") or "")
    return result


# --- checking and scoring ---------------------------------------------------------------------------------------


def _score(result: SimulateResult, checked: dict, data, plan: Plan, manifest: dict) -> None:
    warnings = result.warnings
    for check in checked.values():
        warnings.extend(w for w in check.warnings if w not in warnings)
    by_dtype = {dtype: scoring.score(data.labels, checked[name].predictions, result.class_names) for dtype, name in plan.clean.items()}
    worst = min(by_dtype, key=lambda d: by_dtype[d]["accuracy"])
    result.scores = {**by_dtype[worst], "input": worst}
    result.scores_by_input = {d: s["accuracy"] for d, s in by_dtype.items()}
    _chance(result, data.labels)
    reference = checked[plan.clean[worst]].predictions
    result.predictions = [int(p) for p in np.asarray(reference).reshape(-1)]
    warnings.extend(scoring.consistency_warnings(checked, plan, reference))
    if plan.shift_names:
        result.shift = _shift_result(checked, plan, data.labels, reference, manifest)
        shifted = chance_warning("the shifted mean accuracy", result.shift["mean_accuracy"], result.chance_level)
        warnings.extend([shifted] if shifted and not result.near_chance else [])


def _chance(result: SimulateResult, labels: np.ndarray) -> None:
    """The chance level of the held-out labels; a clean accuracy near it is a warning (`near_chance`)."""
    result.chance_level = chance_level(labels, len(result.class_names))
    warning = chance_warning("accuracy", result.scores["accuracy"], result.chance_level)
    result.near_chance = warning is not None
    if warning:
        result.warnings.append(warning)


def _shift_result(checked: dict, plan: Plan, labels: np.ndarray, reference: np.ndarray, manifest: dict) -> dict:
    """The suite's table and summary; each family marked seen in training from the zip's manifest (None = unknown:
    a zip cbtool did not build, or one built before the manifest recorded training)."""
    from toolkit.train.config import recorded_families

    y = labels[plan.shift_idx]
    table: dict[str, dict[int, float]] = {}
    for name, (family, severity) in plan.shift_names.items():
        table.setdefault(family, {})[severity] = float(np.mean(checked[name].predictions == y))
    clean = float(np.mean(reference[plan.shift_idx] == y))
    out = shift_suite.summarize(clean, table, trained=recorded_families((manifest or {}).get("training")))
    out.update(images_per_set=int(len(y)), seed=plan.seed)
    return out
