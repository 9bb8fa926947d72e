"""The grader's contract as data: what the ingestion program calls, with what, and from where.

One `Contract` record is read by everything that depends on it: `check` (static class/method/metadata checks, the
manifest's class count against `num_classes`), `simulate` (held-out images against `image_shape`), the
model.py renderer (class name, constructor, extra methods), the sandbox child (through its request file: how it
instantiates the class, which methods it calls, in which working directory, with numpy or tf.Tensor input) and
`validate-preprocessing` (which dtypes it probes). The two AN2DL contracts are the instances below; a profile TOML
can define another (`[profiles.NAME.contract]`), or say `contract = 2024` / `2023` as shorthand.

TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import keyword
from dataclasses import dataclass
from typing import Any

from toolkit.errors import RuntimeProfileError
from toolkit.settings import check_settings

INPUT_FORMS = ("numpy", "tensor")
DTYPES = ("uint8", "float32", "float64")
CWD_MODES = ("submission", "program", "unknown")
# Constructor arguments a grader can pass: "path" = the submission folder.
INIT_ARGS = ("path",)
# Methods an ingestion program can call, with their positional arguments after self, in the order it calls them.
METHODS = {"fit": ("X", "y"), "predict": ("X",)}
# Top-level names a cbtool model.py defines besides the grader's class (imports, constants, embedded functions):
# a contract class of the same name would shadow one of them.
MODEL_PY_NAMES = frozenset({"os", "np", "tf", "keras", "ort", "json", "preprocess", "tta_views", "build_model",
                            "load_weights_npz", "save_weights_npz", "weight_arrays", "gelu_erf", "CLASS_NAMES", "MODEL_SPEC",
                            "INPUT_SIZE", "RESIZE", "WEIGHTS_FILE", "FORMAT", "TTA", "BATCH_SIZE", "TTA_VIEWS",
                            "MEMBERS", "MEMBER", "SCALE_SUFFIX", "QMAX", "channel_axis", "quantize", "is_kernel",
                            "quantize_arrays", "is_quantized", "dequantize_arrays"})


@dataclass(frozen=True)
class Contract:
    """What a grader calls. `key` names it in results (2024, 2023, or the profile's name for a custom one)."""

    key: int | str
    class_name: str = "Model"
    init_args: tuple[str, ...] = ()
    input: str = "numpy"  # how X arrives: a numpy array, or a tf.Tensor
    dtypes: tuple[str, ...] = ("uint8", "float32")  # what X may be; the first is what the grader most likely feeds
    returns: str = "indices"  # predict returns class indices of shape (n,): never one-hot, never probabilities
    methods: tuple[str, ...] = ("predict",)  # in call order; "fit" is called with (X_train, y_train) before predict
    metadata: bool = False  # the zip needs an empty file named `metadata` at its root
    cwd: str = "unknown"  # the working directory while the grader imports and runs model.py
    num_classes: int | None = None  # the class count the grader scores (None: not fixed by the contract)
    image_shape: tuple[int, ...] | None = None  # (height, width, channels) of each image in X (None: not fixed)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def tensor_input(self) -> bool:
        return self.input == "tensor"

    @property
    def takes_path(self) -> bool:
        return "path" in self.init_args

    @property
    def run_dir(self) -> str:
        """Where cbtool's non-grading runs (validate-preprocessing, predict) put the working directory: the program
        folder only where the grader is known to run there; else inside the submission, where a bare path works."""
        return "program" if self.cwd == "program" else "submission"

    def init_signature(self) -> str:
        """`__init__(self)` or `__init__(self, path)`."""
        return f"__init__({', '.join(('self', *self.init_args))})"

    def method_signature(self, method: str) -> str:
        """`predict(self, X)`, `fit(self, X, y)`."""
        return f"{method}({', '.join(('self', *METHODS[method]))})"

    def describe(self) -> str:
        """One line for docstrings and messages: class, constructor, methods, input, metadata."""
        ctor = f"{self.class_name}({', '.join(self.init_args)})"
        calls = ", then ".join(self.methods)
        extra = "; an empty `metadata` file in the zip" if self.metadata else ""
        return f"class {self.class_name}: {ctor}, then {calls}; X {self.input} {'/'.join(self.dtypes)}{extra}"

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


def contract_from(value: Any, source: str, key: str) -> Contract:
    """A profile's `contract` setting: the shorthand 2024 / 2023, or a table of Contract fields."""
    if isinstance(value, Contract):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value in SHORTHANDS:
            return SHORTHANDS[value]
        raise RuntimeProfileError(f"{source}: 'contract' must be 2023, 2024 or a table of contract fields, found {value!r}")
    values = check_settings(Contract, value, f"{source} contract", error=RuntimeProfileError, skip=("key",), where="field")
    try:
        return Contract(key=key, **values)
    except ValueError as exc:
        raise RuntimeProfileError(f"{source} contract: {exc}") from None


def _validate(c: Contract) -> None:
    """Field values the types alone do not pin down; ValueError (the profile loader adds the file name)."""
    order = [m for m in METHODS if m in c.methods]
    checks = [
        (c.class_name.isidentifier() and not keyword.iskeyword(c.class_name) and c.class_name not in MODEL_PY_NAMES,
         "class_name", "a Python identifier that is no keyword and no name model.py defines itself", c.class_name),
        (set(c.init_args) <= set(INIT_ARGS) and len(set(c.init_args)) == len(c.init_args), "init_args",
         f"a list drawn from {list(INIT_ARGS)} without repeats", list(c.init_args)),
        (c.input in INPUT_FORMS, "input", " or ".join(INPUT_FORMS), c.input),
        (bool(c.dtypes) and set(c.dtypes) <= set(DTYPES), "dtypes", f"a non-empty list drawn from {list(DTYPES)}", list(c.dtypes)),
        (c.returns == "indices", "returns", "'indices'", c.returns),
        ("predict" in c.methods and set(c.methods) <= set(METHODS) and list(c.methods) == order, "methods",
         f"a list drawn from {list(METHODS)} in that order (fit comes before predict), including predict", list(c.methods)),
        (c.cwd in CWD_MODES, "cwd", " or ".join(CWD_MODES), c.cwd),
        (c.num_classes is None or c.num_classes >= 2, "num_classes", "an integer of at least 2", c.num_classes),
        (c.image_shape is None or (len(c.image_shape) == 3 and min(c.image_shape) >= 1), "image_shape",
         "[height, width, channels] of positive integers", list(c.image_shape or ())),
    ]
    for ok, name, expected, found in checks:
        if not ok:
            raise ValueError(f"field '{name}' must be {expected}, found {found!r}")


# The two AN2DL graders (DESIGN.md §2): 2024 ran inside the submission folder (its official template loads
# 'weights.keras' by a bare relative path); 2023 hands model(path) the folder, so its working directory is unknown.
# Both feed 96x96 RGB images; 2024 scores 8 blood-cell classes, 2023 2 leaf classes (healthy, unhealthy).
AN2DL_2024 = Contract(key=2024, class_name="Model", init_args=(), input="numpy", dtypes=("uint8", "float32"),
                      methods=("predict",), metadata=False, cwd="submission", num_classes=8, image_shape=(96, 96, 3))
AN2DL_2023 = Contract(key=2023, class_name="model", init_args=("path",), input="tensor", dtypes=("float32",),
                      methods=("predict",), metadata=True, cwd="unknown", num_classes=2, image_shape=(96, 96, 3))
SHORTHANDS = {2024: AN2DL_2024, 2023: AN2DL_2023}
# The 2024 calling convention without the blood-cell class count and image size: for the `local` profile, which runs
# one's own data and models of any class count or input size (toolkit.runtime.profiles.local_profile).
LOCAL_2024 = dataclasses.replace(AN2DL_2024, num_classes=None, image_shape=None)
