"""The held-out set against the submission and the grader's contract, before simulate runs anything.

simulate refuses a held-out set it could only score meaninglessly: classes that are not the submission's (by name,
from the zip's manifest; by count and label range where the file has no names), unless `--class-map` says how they
correspond, and images of another size than the contract feeds. TensorFlow-free.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.contract import Contract
from toolkit.errors import DataError, UsageError

MAP_HINT = "--class-map 'heldout=submission,...' (or a JSON file {\"heldout\": \"submission\"})"


@dataclass
class ClassMatch:
    """The classes simulate scores in (the submission's), the held-out labels as those indices, the map used."""

    class_names: list[str]
    labels: np.ndarray
    class_map: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)


def parse_class_map(value: str | None) -> dict[str, str] | None:
    """`--class-map`: a JSON file {held-out class: submission class}, or 'heldout=submission,...'; names or indices."""
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() == ".json" or path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--class-map {value}: no such file") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--class-map {value}: expected a JSON object {{heldout: submission}}; {exc}") from None
        if not isinstance(raw, dict) or not raw:
            raise UsageError(f"--class-map {value}: expected a non-empty JSON object {{heldout: submission}}, found {raw!r}"[:200])
        return {str(k): str(v) for k, v in raw.items()}
    pairs = [item.partition("=") for item in value.split(",")]
    bad = [held + sep + sub for held, sep, sub in pairs if not (sep and held.strip() and sub.strip())]
    if bad:
        raise UsageError(f"--class-map: expected 'heldout=submission,...' or a JSON file; found {bad[0]!r}")
    return {held.strip(): sub.strip() for held, _, sub in pairs}


def match_classes(data, data_path: str | Path, manifest: dict, class_map: dict[str, str] | None) -> ClassMatch:
    """The held-out labels as the submission's class indices; DataError when they cannot be the same classes."""
    submission = [str(c) for c in (manifest or {}).get("classes") or []]
    if class_map is not None:
        return _mapped(data, data_path, submission, class_map)
    if not submission:
        return ClassMatch(list(data.class_names), data.labels, None, [
            f"{data_path}: the zip has no manifest.json class list (not built by cbtool), so simulate cannot check that "
            f"the held-out classes are the submission's; it scores held-out label k as predicted index k"])
    named = declared_names(data, data_path)
    if named is None:
        return _by_index(data, data_path, submission)
    unknown = [n for n in named if n not in submission]
    if unknown:
        raise DataError(f"{data_path}: held-out classes {named} ({len(named)}) are not the submission's: manifest.json "
                        f"lists {len(submission)} classes {submission} (no {unknown[0]!r}); pass {MAP_HINT} if they "
                        "correspond, or use this challenge's held-out set")
    lookup = np.array([submission.index(n) for n in named], dtype=np.int64)
    return ClassMatch(submission, lookup[data.labels])


def _by_index(data, data_path, submission: list[str]) -> ClassMatch:
    """A held-out set with integer labels only: its label range must fit the submission's class count."""
    top = int(data.labels.max()) if len(data.labels) else -1
    if top >= len(submission):
        raise DataError(f"{data_path}: held-out labels go up to {top} ({top + 1} classes), manifest.json lists "
                        f"{len(submission)} classes {submission}; pass {MAP_HINT} if they correspond, or use this "
                        "challenge's held-out set")
    used = len(np.unique(data.labels))
    warnings = []
    if used < len(submission):
        warnings.append(f"{data_path}: the held-out labels (integers, no class names) use {used} of the submission's "
                        f"{len(submission)} classes; label k is scored as {submission[0]!r}... in manifest.json order")
    return ClassMatch(submission, data.labels, None, warnings)


def _mapped(data, data_path, submission: list[str], class_map: dict[str, str]) -> ClassMatch:
    """Labels through `--class-map`: every held-out class that occurs must map to one submission class."""
    held = [str(c) for c in data.class_names]
    targets = submission or [str(i) for i in range(max(len(held), 1 + max(_index(v) for v in class_map.values())))]
    lut = np.full(len(held), -1, dtype=np.int64)
    for key, value in class_map.items():
        lut[_resolve(key, held, f"held-out class {key!r}", str(data_path))] = _resolve(
            value, targets, f"submission class {value!r}", "manifest.json" if submission else "the zip")
    missing = [held[i] for i in np.unique(data.labels) if lut[i] < 0]
    if missing:
        raise UsageError(f"--class-map maps no submission class to held-out class(es) {missing} of {data_path}; "
                         f"map every class the held-out labels use")
    used = {held[i]: targets[lut[i]] for i in range(len(held)) if lut[i] >= 0}
    return ClassMatch(targets, lut[data.labels], used)


def _index(value: str) -> int:
    """A submission-side class given as an index (the zip has no class names to name it by)."""
    if not value.isdigit():
        raise UsageError(f"--class-map: the zip has no manifest.json class names; give submission classes as indices, "
                         f"found {value!r}")
    return int(value)


def _resolve(key: str, names: list[str], what: str, where: str) -> int:
    if key in names:
        return names.index(key)
    if key.isdigit() and int(key) < len(names):
        return int(key)
    raise UsageError(f"--class-map: {what} is not among the {len(names)} classes of {where}: {names}")


def declared_names(data, data_path: str | Path) -> list[str] | None:
    """The class names the held-out file itself states (a class_names array, or string labels); None when the
    loader made them up from integer labels (digits, or the blood-cell names it assumes for an 8-class AN2DL file)."""
    from toolkit.data.io import BLOOD_CELL_CLASSES

    names = [str(c) for c in data.class_names]
    if names == [str(i) for i in range(len(names))]:
        return None
    if names != BLOOD_CELL_CLASSES:
        return names
    try:
        with zipfile.ZipFile(data_path) as zf:
            return names if "class_names.npy" in zf.namelist() else None
    except (OSError, zipfile.BadZipFile):
        return names


def check_image_size(images: np.ndarray, contract: Contract, profile_name: str, data_path: str | Path) -> None:
    """DataError when the held-out images are not the size the contract's grader feeds (its image_shape)."""
    want = tuple(contract.image_shape or ())
    found = tuple(int(d) for d in images.shape[1:])
    if not want or found == want:
        return
    show = lambda shape: "x".join(map(str, shape))  # noqa: E731
    fix = f"resize your held-out set to {show(want[:2])}" if found[2:] == want[2:] else f"give {show(want)} images"
    raise DataError(f"{data_path}: images are {show(found)}, but profile {profile_name}'s grader feeds {show(want)}: "
                    f"{fix} or use a profile whose contract says image_shape = {list(found)}")
