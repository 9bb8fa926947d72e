"""k-fold cross-validation as independent runs: which fold a run trains on, and the pooled out-of-fold report.

Each fold is an ordinary `cbtool train` run, on its own machine if need be. `train --fold DIR/fold_i` records the
fold and a copy of the split's folds.json in the run dir; every finished run writes oof.npz. `cv-report` pools them.
TensorFlow-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.artifacts import FoldDir, RunDir
from toolkit.errors import DataError
from toolkit.fsutil import atomic_path, sha256_file, write_json
from toolkit.results import Result, chance_level

REPORT_JSON = "cv_report.json"
REPORT_CONFUSION_PNG = "confusion_matrix.png"


@dataclass(frozen=True)
class FoldRef:
    """Fold `fold` of a `k`-fold split: its train/val npz, the split's folds.json and that file's sha256."""

    fold: int
    k: int
    train: Path
    val: Path
    folds_json: Path
    folds_sha256: str


def resolve_fold(fold_dir: str | Path) -> FoldRef:
    """The fold a `DIR/fold_i` folder holds, checked against the split's folds.json."""
    where = FoldDir(fold_dir)
    if not where.looks_like():
        missing = [p.name for p in (where.train, where.val) if not p.is_file()]
        raise DataError(f"{where}: expected a {where.kind} holding train.npz and val.npz; missing {', '.join(missing)}")
    record = where.split.read_json(where.split.folds_json, DataError)
    k = record.get("k")
    if where.index is None or not isinstance(k, int) or not 1 <= where.index <= k:
        raise DataError(f"{where}: expected a folder named fold_1 ... fold_{k} beside {where.split.folds_json}; "
                        f"found {where.path.name!r}")
    return FoldRef(where.index, k, where.train, where.val, where.split.folds_json, sha256_file(where.split.folds_json))


def record_fold(run_dir: str | Path, ref: FoldRef) -> None:
    """Write fold.json and a copy of folds.json into the run dir, so a run copied back from elsewhere is complete."""
    paths = RunDir(run_dir)
    with atomic_path(paths.folds) as tmp:
        tmp.write_bytes(ref.folds_json.read_bytes())
    write_json(paths.fold_record, {"fold": ref.fold, "k": ref.k, "fold_dir": str(ref.val.parent.resolve()),
                                   "folds_sha256": ref.folds_sha256})


@dataclass
class _Oof:
    """One run's out-of-fold predictions, class list and fold record (None without --fold)."""

    run: str
    class_names: list[str]
    fold: dict | None
    indices: np.ndarray
    labels: np.ndarray
    probs: np.ndarray


def load_oof(run_dir: str | Path) -> _Oof:
    """A run's oof.npz, classes and fold record; a run without oof.npz (unfinished or older) is a DataError."""
    paths = RunDir(run_dir)
    if not paths.oof.is_file():
        raise DataError(f"{paths.oof}: missing (expected the out-of-fold predictions a finished cbtool train run writes)")
    names = paths.read_json(paths.classes, DataError).get("class_names")
    fold = paths.read_json(paths.fold_record, DataError) if paths.fold_record.is_file() else None
    try:
        with np.load(paths.oof) as saved:
            indices, labels, probs = (np.asarray(saved[key]) for key in ("original_indices", "labels", "probs"))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{paths.oof}: not readable (expected original_indices, labels, probs): {exc}") from exc
    if probs.shape != (len(labels), len(names or [])) or indices.shape != labels.shape:
        raise DataError(f"{paths.oof}: expected probs of shape ({len(labels)}, {len(names or [])}) and one index per "
                        f"label; found probs {probs.shape}, {indices.shape[0]} indices")
    return _Oof(str(run_dir), list(names), fold, indices.astype(np.int64), labels.astype(np.int64), probs)


@dataclass
class CvReport(Result):
    """Out-of-fold scores: pooled metrics over every run's validation rows, accuracy per fold, coverage, warnings."""

    n: int
    accuracy: float  # pooled
    fold_accuracy_mean: float
    fold_accuracy_std: float  # population std (ddof=0) over the runs
    folds: list[dict]  # per run: run, fold, n, accuracy
    pooled: dict  # toolkit.train.metrics.classification_metrics of the pooled rows
    coverage: dict | None  # rows of folds.json, rows covered, folds missing; None when no run has a fold record
    warnings: list[str] = field(default_factory=list)
    report_dir: str | None = None
    chance_level: float | None = None  # majority-class rate of the pooled labels (at least 1/K)
    near_chance: bool = False  # pooled accuracy below toolkit.results.near_chance_bound: a warning


def cv_report(run_dirs: list[str | Path], report_dir: str | Path | None = None) -> CvReport:
    """Pool the runs' oof.npz into one report; refuse mixed class lists, a fold given twice or overlapping rows."""
    from toolkit.results import chance_warning
    from toolkit.train.metrics import accuracy, classification_metrics

    runs = [load_oof(run) for run in run_dirs]
    _check_compatible(runs)
    labels = np.concatenate([r.labels for r in runs])
    predicted = np.concatenate([r.probs.argmax(axis=1) for r in runs])
    per_run = [{"run": r.run, "fold": (r.fold or {}).get("fold"), "n": len(r.labels),
                "accuracy": accuracy(r.labels, r.probs.argmax(axis=1))} for r in runs]
    scores = np.array([row["accuracy"] for row in per_run])
    pooled = classification_metrics(labels, predicted, runs[0].class_names)
    coverage, warnings = _coverage(runs)
    chance = chance_level(labels, len(runs[0].class_names))
    near = chance_warning("out-of-fold accuracy", pooled["accuracy"], chance)
    result = CvReport(len(labels), pooled["accuracy"], float(scores.mean()), float(scores.std()), per_run, pooled,
                      coverage, warnings + ([near] if near else []), str(report_dir) if report_dir else None,
                      chance, near is not None)
    if report_dir:
        _write_report(Path(report_dir), result)
    return result


def _check_compatible(runs: list[_Oof]) -> None:
    """One class list, each fold once, no row in two runs, one split."""
    first = runs[0]
    seen: dict[tuple, str] = {}
    splits = {r.fold["folds_sha256"] for r in runs if r.fold}
    for run in runs:
        if run.class_names != first.class_names:
            raise DataError(f"{run.run}: classes {run.class_names} differ from {first.run}'s {first.class_names}; "
                            "cv-report pools runs of one class list")
        key = (run.fold["folds_sha256"], run.fold["fold"]) if run.fold else ("run", str(Path(run.run).resolve()))
        if key in seen:
            what = f"fold {key[1]}" if run.fold else "this run"
            raise DataError(f"{run.run}: {what} given twice (also {seen[key]}); pass each fold's run once")
        seen[key] = run.run
    if len(splits) > 1:
        raise DataError(f"{', '.join(r.run for r in runs)}: the runs come from {len(splits)} different splits "
                        "(their folds.json differ); pool the folds of one `cbtool split --folds`")
    _check_disjoint(runs)


def _check_disjoint(runs: list[_Oof]) -> None:
    owner: dict[int, str] = {}
    for run in runs:
        for index in run.indices.tolist():
            if owner.setdefault(index, run.run) != run.run:
                raise DataError(f"{run.run}: original row {index} is also out-of-fold in {owner[index]}; "
                                "the runs' validation sets overlap (a fold given twice?)")


def _coverage(runs: list[_Oof]) -> tuple[dict | None, list[str]]:
    """How many rows of the split's folds.json the runs cover; a warning for each gap."""
    with_fold = [r for r in runs if r.fold]
    warnings = [f"{r.run}: no fold record (trained without --fold); its rows are pooled but coverage is not checked"
                for r in runs if not r.fold]
    if not with_fold:
        return None, warnings
    folds_json = RunDir(with_fold[0].run).folds
    rows = set(RunDir(with_fold[0].run).read_json(folds_json, DataError)["rows"]["original_index"])
    covered = rows & {i for r in runs for i in r.indices.tolist()}
    k = with_fold[0].fold["k"]
    missing = sorted(set(range(1, k + 1)) - {r.fold["fold"] for r in with_fold})
    if len(covered) < len(rows):
        warnings.append(f"the runs cover {len(covered)} of the {len(rows)} rows of {folds_json}"
                        + (f" (fold {', '.join(map(str, missing))} of {k} missing)" if missing else ""))
    return {"rows": len(rows), "covered": len(covered), "k": k, "missing_folds": missing}, warnings


def _write_report(out: Path, result: CvReport) -> None:
    from toolkit.train.metrics import plot_confusion_matrix

    write_json(out / REPORT_JSON, result.to_dict())
    plot_confusion_matrix(np.array(result.pooled["confusion_matrix"]), result.pooled["class_names"],
                          out / REPORT_CONFUSION_PNG, title=f"out-of-fold, accuracy {result.accuracy:.3f}")


def render(result: CvReport) -> str:
    """The human text of a cv report: pooled and per-fold accuracy, per-class table, warnings."""
    lines = [f"out-of-fold accuracy {result.accuracy:.4f} over {result.n} rows (pooled); per fold "
             f"{result.fold_accuracy_mean:.4f} ± {result.fold_accuracy_std:.4f}; balanced accuracy "
             f"{result.pooled['balanced_accuracy']:.4f}, macro F1 {result.pooled['macro_f1']:.4f}"]
    lines += [f"  fold {row['fold'] or '-'}: {row['accuracy']:.4f} on {row['n']} rows ({row['run']})" for row in result.folds]
    width = max(len(name) for name in result.pooled["class_names"])
    lines.append(f"  {'class':<{width}}  precision  recall      F1  support")
    lines += [f"  {name:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:6.3f}  {c['support']:7d}"
              for name, c in result.pooled["per_class"].items()]
    cm = np.array(result.pooled["confusion_matrix"])
    cell = len(str(int(cm.max(initial=0))))
    lines.append("  confusion matrix (rows: true class, columns: predicted, in class order):")
    lines += [f"  {name:<{width}}  " + " ".join(f"{int(v):>{cell}}" for v in row)
              for name, row in zip(result.pooled["class_names"], cm)]
    lines += [f"warning: {w}" for w in result.warnings]
    if result.report_dir:
        lines.append(f"report in {result.report_dir}")
    return "\n".join(lines)
