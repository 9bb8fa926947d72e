"""The artefacts cbtool writes and reads, as small path types: every file name lives here and nowhere else.

- `RunDir`: what `cbtool train` writes (config, spec, classes, preprocessing, best weights, metrics, probe, state/).
- `ExportDir`: what `cbtool export` writes (the same spec files plus the weights of each export format).
- `FORMATS`: the export/submission formats and the one weights file each puts in a submission zip.
- `SUBMISSION_FILES`: the fixed names inside a cbtool-built zip (an ensemble's members: `member_weights_file`).
- `FoldsDir`, `FoldDir`: what `cbtool split --folds K` writes (folds.json, fold_1 ... fold_K with train/val npz).

TensorFlow-free; reading JSON here keeps the "missing or unreadable" messages in one shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import CbtoolError

# Export format -> the weights file a submission of that format carries (the order is the canonical order).
FORMATS = {"portable": "weights.npz", "keras": "model.keras", "onnx": "model.onnx"}
# What each format's model.py imports besides numpy.
FRAMEWORKS = {"portable": "tensorflow", "keras": "tensorflow", "onnx": "onnxruntime"}


def weights_file(fmt: str) -> str:
    """The weights file name of export format `fmt` (KeyError-free: unknown formats are a CbtoolError)."""
    if fmt not in FORMATS:
        raise CbtoolError(f"format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    return FORMATS[fmt]


def member_name(index: int) -> str:
    """The name of ensemble member `index` (1-based) in a zip: its manifest entry and its weights file's prefix."""
    return f"member{int(index)}"


def member_weights_file(fmt: str, index: int) -> str:
    """The weights file of ensemble member `index` (1-based) in a zip: member2_weights.npz, member1_model.keras, ..."""
    return f"{member_name(index)}_{weights_file(fmt)}"


class SUBMISSION_FILES:  # noqa: N801 - a namespace of constants
    """Names inside a submission zip."""

    MODEL_PY = "model.py"
    MANIFEST = "manifest.json"
    METADATA = "metadata"


@dataclass(frozen=True)
class _ArtefactDir:
    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def model_spec(self) -> Path:
        return self.path / "model_spec.json"

    @property
    def classes(self) -> Path:
        return self.path / "classes.json"

    @property
    def preprocessing(self) -> Path:
        return self.path / "preprocessing.json"

    @property
    def probe(self) -> Path:
        return self.path / "probe.npz"

    def read_json(self, path: Path, error: type[CbtoolError] = CbtoolError) -> dict:
        """A JSON file of this dir as a dict; a missing or unreadable file is `error` naming it."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise error(f"{path}: missing (is {self.path} a {self.kind}?)") from exc
        except (OSError, ValueError) as exc:
            raise error(f"{path}: not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
        return data

    kind = "cbtool directory"


class RunDir(_ArtefactDir):
    """A training run dir (`cbtool train -o RUN`)."""

    kind = "training run dir"
    STATE_DIR = "state"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def best_weights(self) -> Path:
        return self.path / "best.weights.h5"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def confusion_png(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def curves_png(self) -> Path:
        return self.path / "learning_curves.png"

    @property
    def state_dir(self) -> Path:
        return self.path / self.STATE_DIR

    @property
    def last_weights(self) -> Path:
        return self.state_dir / "last.weights.h5"

    @property
    def optimizer_state(self) -> Path:
        return self.state_dir / "optimizer.npz"

    @property
    def state(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def oof(self) -> Path:
        """Out-of-fold predictions: the validation rows' original indices, labels and softmax."""
        return self.path / "oof.npz"

    @property
    def fold_record(self) -> Path:
        """Which fold of which split this run trained on (`train --fold`)."""
        return self.path / "fold.json"

    @property
    def folds(self) -> Path:
        """A copy of the split's folds.json, so a run dir copied back from another machine is complete."""
        return self.path / FOLDS_JSON

    def required(self) -> tuple[Path, ...]:
        """What export needs from a finished run."""
        return (self.model_spec, self.classes, self.preprocessing, self.best_weights, self.probe)

    def looks_like(self) -> bool:
        return self.best_weights.is_file()


FOLDS_JSON = "folds.json"


class FoldDir(_ArtefactDir):
    """One fold of a k-fold split: train.npz (the other folds) and val.npz (this fold)."""

    kind = "fold dir (DIR/fold_i of cbtool split --folds)"
    PREFIX = "fold_"

    @property
    def train(self) -> Path:
        return self.path / "train.npz"

    @property
    def val(self) -> Path:
        return self.path / "val.npz"

    @property
    def index(self) -> int | None:
        """i of a folder named fold_i; None for any other name."""
        tail = self.path.name.removeprefix(self.PREFIX)
        return int(tail) if self.path.name.startswith(self.PREFIX) and tail.isdigit() else None

    @property
    def split(self) -> "FoldsDir":
        return FoldsDir(self.path.parent)

    def looks_like(self) -> bool:
        return self.train.is_file() and self.val.is_file()


class FoldsDir(_ArtefactDir):
    """A k-fold split (`cbtool split DATA --folds K -o DIR`): folds.json and fold_1 ... fold_K."""

    kind = "k-fold split dir"

    @property
    def folds_json(self) -> Path:
        return self.path / FOLDS_JSON

    def fold(self, i: int) -> FoldDir:
        return FoldDir(self.path / f"{FoldDir.PREFIX}{i}")

    def looks_like(self) -> bool:
        return self.folds_json.is_file()


class ExportDir(_ArtefactDir):
    """An export dir (`cbtool export RUN -o EXPORT`)."""

    kind = "export dir"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def keras_weights(self) -> Path:
        """The portable format's Keras 3 weights file (beside weights.npz)."""
        return self.path / "model.weights.h5"

    def weights(self, fmt: str) -> Path:
        """The weights file of export format `fmt`."""
        return self.path / weights_file(fmt)

    def copied_from_run(self) -> tuple[str, ...]:
        """The run files an export carries unchanged."""
        return tuple(p.name for p in (self.model_spec, self.classes, self.preprocessing, self.probe))

    def looks_like(self) -> bool:
        return self.manifest.is_file() and self.model_spec.is_file()
