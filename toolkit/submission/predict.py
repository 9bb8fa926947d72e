"""`cbtool predict`: a submission's predictions on a test npz, as a CSV for competitions graded on result files.

The predictions come from the one loader, `toolkit.runtime.sandbox.run_submission`, exactly as `simulate` runs the
zip (same sandbox, same runtime, the contract's first dtype), so the CSV holds what the grader's child would
compute. A run or export dir is first built into a temporary zip for the profile with `build_submission`, so the
CSV is what that zip predicts. The test npz needs no labels.
"""

from __future__ import annotations

import csv
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.data.io import SCHEMAS
from toolkit.errors import ConfigError, DataError, SubmissionFailed
from toolkit.results import Result
from toolkit.runtime.profiles import Profile

ID_KEYS = ("ids", "id")  # the npz arrays that name each test image, in lookup order
LABEL_COLUMN = "label"
STDERR_LINES = 20  # of a failed child's stderr, shown through `log`


@dataclass
class PredictResult(Result):
    """The CSV written (path, rows, sha256), the rows per label as written, and how the predictions were made."""

    csv: str
    n: int
    sha256: str
    counts: dict[str, int]
    profile: str
    source: str
    built: bool  # True when `source` was a run/export dir built into a temporary zip first
    data: str
    id_column: str
    ids_from: str | None  # the npz array the ids came from; None = the row index
    label_names: bool
    class_names: list[str] | None
    input_dtype: str
    batches: int
    timing: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PredictOptions:
    """CSV layout and how to feed the submission: `batch_size` None = one predict call on the whole set, as graders do."""

    id_column: str = "id"
    label_names: bool = False
    batch_size: int | None = None
    allow_pickle: bool = False


@dataclass
class TestSet:
    """Images (uint8, N x H x W x 3) and one id per image; class names when the npz has labels or `class_names`."""

    images: np.ndarray
    ids: list
    ids_from: str | None
    class_names: list[str] | None
    warnings: list[str] = field(default_factory=list)  # the loader's findings (e.g. 0-1 floats rescaled)


def predict(source: str | Path, data_path: str | Path, output: str | Path, profile: Profile,
            options: PredictOptions | None = None, log: Callable[[str], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> PredictResult:
    """Run `source` (a zip, or a run/export dir built for `profile`) on `data_path`; write the CSV at `output`.

    Raises `SubmissionFailed` (exit 3) when the submission fails or returns bad output; nothing is written then.
    """
    from toolkit.runtime.sandbox import run_submission

    options, log = options or PredictOptions(), log or (lambda _msg: None)
    source, output = Path(source), Path(output)
    _check_options(options, output, Path(data_path))
    test = read_test_set(data_path, options.allow_pickle)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cbtool-predict-") as scratch:
        zip_path, warnings = _submission_zip(source, Path(scratch), profile, log)
        build_s = time.perf_counter() - started
        classes = _manifest_classes(zip_path, source, options.label_names)
        inputs = _inputs(test.images, profile.contract.dtypes[0], options.batch_size)
        outcome = run_submission(zip_path, profile, inputs, log=log, progress=progress, cwd=profile.contract.run_dir)
    _raise_on_failure(outcome, source, log)
    names = classes or test.class_names
    predictions, output_warnings = _checked(outcome.outputs, inputs, names, source)
    labels = [names[i] for i in predictions] if options.label_names else [int(i) for i in predictions]
    _write_csv(output, options.id_column, test.ids, labels)
    if "fit" in profile.contract.methods:
        warnings.append(f"profile {profile.name}'s contract calls fit(X, y) before predict; predict has no training "
                        "data, so fit was not called")
    from toolkit.fsutil import sha256_file

    return PredictResult(
        csv=str(output), n=len(labels), sha256=sha256_file(output), counts=_counts(predictions, names, options.label_names),
        profile=profile.name, source=str(source), built=source.is_dir(), data=str(data_path), id_column=options.id_column,
        ids_from=test.ids_from, label_names=options.label_names, class_names=names, input_dtype=profile.contract.dtypes[0],
        batches=len(inputs), timing=_timing(outcome, build_s if source.is_dir() else None, time.perf_counter() - started, len(labels)),
        warnings=test.warnings + warnings + output_warnings,
    )  # fmt: skip


def _check_options(options: PredictOptions, output: Path, data_path: Path) -> None:
    column = options.id_column
    if not column or column.strip() != column or column == LABEL_COLUMN or any(c in column for c in ",\"\r\n"):
        raise ConfigError(f"--id-column: expected a plain column name other than {LABEL_COLUMN!r}, found {column!r}")
    if options.batch_size is not None and int(options.batch_size) < 1:
        raise ConfigError(f"--batch-size: expected a positive integer, found {options.batch_size}")
    if output.is_dir():
        raise ConfigError(f"{output}: is a directory; expected the path of the CSV file to write")
    if output.exists() and data_path.exists() and output.resolve() == data_path.resolve():
        raise ConfigError(f"{output}: refusing to overwrite the input data; choose another output path")


# --- the test set -------------------------------------------------------------------------------------------------


def read_test_set(path: str | Path, allow_pickle: bool = False) -> TestSet:
    """Images (any of the training schemas' image arrays; labels optional) and ids (`ids`/`id`, else the row index)."""
    from toolkit.data import io

    path = Path(path)
    archive = io.open_npz(path, allow_pickle)  # refuses pickled arrays unless allow_pickle, like every loader
    try:
        keys = set(archive.files)
        labelled = any(image in keys and label in keys for image, label in SCHEMAS.values())
        image_key = next((image for image, _ in SCHEMAS.values() if image in keys), None)
        if image_key is None:
            expected = " or ".join(f"'{image}'" for image, _ in SCHEMAS.values())
            raise DataError(f"{path}: expected an image array {expected}; found keys {', '.join(sorted(keys)) or 'none'}")
        raw = None if labelled else io.read_array(path, archive, image_key, allow_pickle)
        names = io.read_array(path, archive, "class_names", allow_pickle) if "class_names" in keys else None
        ids_from = next((k for k in ID_KEYS if k in keys), None)
        raw_ids = io.read_array(path, archive, ids_from, allow_pickle) if ids_from else None
    finally:
        archive.close()
    found: list[str] = []
    if labelled:  # the loader validates the labels too, and names the classes they imply
        dataset = io.load_dataset(path, allow_pickle=allow_pickle)
        images, class_names, found = dataset.images, list(dataset.class_names), list(dataset.warnings)
    else:
        images = io.validate_images(path, image_key, raw, found)
        class_names = [str(n) for n in names] if names is not None else None
    ids = _ids(path, ids_from, raw_ids, len(images)) if ids_from else list(range(len(images)))
    return TestSet(images, ids, ids_from, class_names, found)


def _ids(path: Path, key: str, raw: np.ndarray, n: int) -> list:
    """One id per image, as ints or strings; duplicates refused (a result file keys its rows by them)."""
    values = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if values.shape != (n,):
        raise DataError(f"{path}: '{key}' has shape {raw.shape}, expected ({n},): one id per image")
    if values.dtype.kind in "iu":
        ids: list = [int(v) for v in values]
    elif values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.rint(values)):
        ids = [int(v) for v in values]
    elif values.dtype.kind in "USO":
        ids = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]
    else:
        raise DataError(f"{path}: '{key}' has dtype {values.dtype}, expected integer or string ids")
    seen: dict = {}
    for row, value in enumerate(ids):
        if value in seen:
            raise DataError(f"{path}: '{key}' holds id {value!r} twice (rows {seen[value]} and {row}); expected unique ids")
        seen[value] = row
    return ids


# --- running ------------------------------------------------------------------------------------------------------


def _submission_zip(source: Path, scratch: Path, profile: Profile, log: Callable[[str], None]) -> tuple[Path, list[str]]:
    """`source` itself when it is a zip; a run/export dir built for `profile` into `scratch` (check findings as warnings)."""
    if not source.is_dir():
        return source, []
    from toolkit.submission.build import build_submission

    log(f"{source} is a directory: building a submission zip for {profile.name} first")
    built = build_submission(source, scratch / "submission.zip", profile, log=log)
    warnings = [f"the built zip fails check: {issue.message}" for issue in built.check.issues if issue.severity == "error"]
    return Path(built.zip), warnings


def _manifest_classes(zip_path: Path, source: Path, label_names: bool) -> list[str] | None:
    """The class names the zip's manifest.json records; `--label-names` without them is refused before any run."""
    from toolkit.submission_zip import SubmissionZip

    with SubmissionZip(zip_path) as sub:
        classes = [str(c) for c in sub.manifest.get("classes") or []]
    if label_names and not classes:
        raise ConfigError(f"{source}: --label-names needs the class names in the zip's manifest.json ('classes'), "
                          "and this zip has none (cbtool build-submission records them); write class indices instead")
    return classes or None


def _inputs(images: np.ndarray, dtype: str, batch_size: int | None) -> dict[str, np.ndarray]:
    """The whole set as one predict call (what graders do), or consecutive batches of `batch_size`, in input order."""
    n = len(images)
    if not batch_size or batch_size >= n:
        return {"test": images.astype(dtype)}
    return {f"test/{start:07d}": images[start:start + batch_size].astype(dtype) for start in range(0, n, batch_size)}


def _raise_on_failure(outcome, source: Path, log: Callable[[str], None]) -> None:
    """A failed run is a SubmissionFailed naming its kind and phase, as simulate names them; stderr goes to `log`."""
    failure = outcome.failure
    if outcome.ok and failure is None:
        return
    kind, phase = (failure.kind, failure.phase) if failure else ("exit", "unknown")
    message = " ".join((failure.message if failure else "the child reported failure without a reason").split())
    tail = (failure.stderr_tail if failure else "") or outcome.stderr_tail
    if tail.strip():
        log("the submission's stderr (last lines):\n" + "\n".join(tail.strip().splitlines()[-STDERR_LINES:]))
    raise SubmissionFailed(f"{source}: the submission failed: {kind} during {phase}: {message} "
                           f"(`cbtool simulate {source.name} --data ...` diagnoses it)")


def _checked(outputs: dict, inputs: dict[str, np.ndarray], names: list[str] | None,
             source: Path) -> tuple[np.ndarray, list[str]]:
    """Every batch's output validated by the grader's output contract, concatenated in input order."""
    from toolkit.runtime.scoring import BadOutput, check_output

    k, warnings = len(names) if names else None, []
    if k is None:
        warnings.append("the class count is unknown (no classes in the zip's manifest, no labels or class_names in "
                        "the data): indices were checked only for being whole numbers >= 0")
    parts = []
    for name, x in inputs.items():
        try:
            if name not in outputs:
                raise BadOutput(f"predict returned nothing for input {name!r}")
            bound = k if k is not None else _implied_classes(outputs[name])
            checked = check_output(outputs[name], len(x), bound, what=f"predict(X {x.dtype} of shape {tuple(x.shape)})")
        except BadOutput as exc:
            raise SubmissionFailed(f"{source}: the submission failed: bad_output during predict: {exc}") from exc
        warnings.extend(w for w in checked.warnings if w not in warnings)
        parts.append(checked.predictions)
    return np.concatenate(parts), warnings


def _implied_classes(value) -> int:
    """Without a known class count, any index >= 0 is allowed: the bound is one past the largest (negatives still fail)."""
    arr = np.asarray(value)
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        return 1
    return max(int(np.max(arr)) + 1, 1)


# --- writing ------------------------------------------------------------------------------------------------------


def _write_csv(output: Path, id_column: str, ids: list, labels: list) -> None:
    """`id_column,label` then one row per image in input order, written atomically (a failure leaves no CSV)."""
    from toolkit.fsutil import atomic_open

    with atomic_open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([id_column, LABEL_COLUMN])
        writer.writerows(zip(ids, labels))


def _counts(predictions: np.ndarray, names: list[str] | None, label_names: bool) -> dict[str, int]:
    """Rows per label as the CSV writes it (names or indices), every known class listed, zeros included."""
    k = len(names) if names else int(predictions.max(initial=-1)) + 1
    per_class = np.bincount(predictions, minlength=k)
    return {(names[i] if label_names and names else str(i)): int(c) for i, c in enumerate(per_class)}


def _timing(outcome, build_s: float | None, wall_s: float, n: int) -> dict:
    predict_s = sum((outcome.timing.get("predict_s") or {}).values())
    return {"build_s": build_s, "import_s": outcome.timing.get("import_s"), "load_s": outcome.timing.get("load_s"),
            "predict_s": predict_s, "images_per_s": n / predict_s if predict_s > 0 else None, "wall_s": wall_s}


def render(result: PredictResult) -> str:
    """The one-line human summary, then one `warning:` line per warning."""
    shown = ", ".join(f"{label} {count}" for label, count in result.counts.items() if count)
    line = (f"wrote {result.csv}: {result.n} rows ({result.id_column},{LABEL_COLUMN}) from {Path(result.source).name} in "
            f"{result.profile}, {result.timing['wall_s']:.1f} s; labels: {shown}; sha256 {result.sha256[:12]}")
    return "\n".join([line, *(f"warning: {w}" for w in result.warnings)])
