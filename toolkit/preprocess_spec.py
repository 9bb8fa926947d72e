"""Declared preprocessing (`--preprocess SPEC`): what a user's own model was trained with, as numpy-only source.

A SPEC is either named steps joined by `+` in the order applied (`raw`; `scale:1/255`; `scale:1/127.5,offset:-1`
= x / 127.5 - 1; `resize:224:bilinear` or `:nearest`; `bgr`), or the path of a Python file defining
`preprocess(images) -> array` that imports numpy only (copied verbatim, plus a final newline if it lacks one).

Either way the result is one text, `PreprocessSpec.source`, defining `preprocess(images)` -> float32 (n, S, S, 3).
model.py embeds that text verbatim as the block `PreprocessSpec.name` and calls its `preprocess`; `apply` runs the
same text in a fresh namespace, so the parent computes exactly what the submission runs.

How the generated source resizes: it carries a verbatim copy of toolkit/preprocessing.py's private resize
functions (`_resize` and its helpers, cut out with `ast`), so the block stands alone: model.py needs no other
block, and a model.py that also embeds toolkit/preprocessing.py gets the same, identical definitions. Scales are
written as a float32 division when given as `1/N`, because `x / 255.0` and `x * (1 / 255)` differ in the last bit.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ConfigError
from toolkit.fsutil import sha256_text
from toolkit.preprocessing import RESIZE_METHODS

SPEC_BLOCK_NAME = "preprocess_spec.py"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$", re.I)
FORMS = ("raw", "scale:A[/B]", "offset:A[/B]", "resize:SIZE[:bilinear|nearest]", "bgr")


@dataclass(frozen=True)
class PreprocessSpec:
    """A parsed SPEC: its text, the numpy-only source model.py embeds, the block's name, the size it resizes to."""

    text: str
    source: str
    name: str
    input_size: int | None

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Run `source` in a fresh namespace on `images`: exactly what the embedded block computes."""
        namespace: dict = {"__name__": "preprocess_spec"}
        try:
            exec(compile(self.source, self.name, "exec"), namespace)  # noqa: S102 - the declared, numpy-only code
            out = namespace["preprocess"](images)
        except Exception as exc:  # noqa: BLE001 - the user's code: one line naming the spec, not a traceback
            raise ConfigError(f"--preprocess {self.text}: preprocess(images) raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, np.ndarray) or out.ndim != 4 or out.shape[-1] != 3 or out.dtype != np.float32:
            found = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}".strip()
            raise ConfigError(f"--preprocess {self.text}: preprocess(images) must return a float32 (n, S, S, 3) "
                              f"numpy array; found {found}")
        return out

    def sha256(self) -> str:
        """sha256 of `source` (what the embedded block's BEGIN marker carries)."""
        return sha256_text(self.source)

    def to_dict(self) -> dict:
        """For manifests: text, name, sha256, input_size."""
        return {"text": self.text, "name": self.name, "sha256": self.sha256(), "input_size": self.input_size}


def parse_spec(text: str) -> PreprocessSpec:
    """A named-form SPEC or the path of a numpy-only `preprocess(images)` file; ConfigError with one line if bad."""
    text = str(text).strip()
    if not text:
        raise ConfigError(f"--preprocess: expected one of {', '.join(FORMS)} joined by '+', or a .py file; found ''")
    if text.endswith(".py"):
        return _file_spec(text)
    steps = _parse_steps(text)
    return PreprocessSpec(text, _generate(text, steps), SPEC_BLOCK_NAME, _resize_size(steps))


def resize_variants(spec: PreprocessSpec) -> dict[str, PreprocessSpec]:
    """For diagnosis: the same named-form spec with each other resize method, keyed by that method ({} for files)."""
    if spec.input_size is None:  # no resize, or a file (whose text is not steps)
        return {}
    steps, current = _parse_steps(spec.text), resize_method(spec)
    out = {}
    for method in RESIZE_METHODS:
        if method != current:
            swapped = [("resize", s[1], method) if s[0] == "resize" else s for s in steps]
            out[method] = PreprocessSpec(spec.text, _generate(spec.text, swapped), spec.name, spec.input_size)
    return out


def resize_method(spec: PreprocessSpec) -> str | None:
    """The method of a named-form spec's last resize step (None when it does not resize, or for a file)."""
    if spec.input_size is None:
        return None
    return next(s[2] for s in reversed(_parse_steps(spec.text)) if s[0] == "resize")


# --- named forms --------------------------------------------------------------------------------------------------


def _parse_steps(text: str) -> list[tuple]:
    """`+`- and `,`-separated atoms, in order: ("scale"|"offset", num, den|None), ("resize", size, method), ("bgr",)."""
    atoms = [a.strip() for part in text.split("+") for a in part.split(",")]
    if atoms == ["raw"]:
        return []
    steps = []
    for atom in atoms:
        key, _, rest = atom.partition(":")
        if key in ("scale", "offset") and rest:
            steps.append((key, *_number(text, atom, rest)))
        elif key == "resize" and rest:
            steps.append(_resize_step(text, atom, rest))
        elif atom == "bgr":
            steps.append(("bgr",))
        else:
            hint = " ('raw' stands alone)" if atom == "raw" else ""
            raise ConfigError(f"--preprocess {text}: step {atom!r} is not one of {', '.join(FORMS)}{hint}, nor a .py file")
    return steps


def _number(text: str, atom: str, value: str) -> tuple[float, float | None]:
    num, slash, den = value.partition("/")
    parts = [num, den] if slash else [num]
    if not all(_NUMBER.match(p.strip()) for p in parts) or (slash and float(den) == 0):
        raise ConfigError(f"--preprocess {text}: {atom!r} needs a number or a fraction A/B (e.g. 1/255); found {value!r}")
    return float(num), (float(den) if slash else None)


def _resize_step(text: str, atom: str, rest: str) -> tuple:
    size, _, method = rest.partition(":")
    method = method or "bilinear"
    if not size.isdigit() or int(size) < 1 or method not in RESIZE_METHODS:
        raise ConfigError(f"--preprocess {text}: expected resize:SIZE[:{'|'.join(RESIZE_METHODS)}]; found {atom!r}")
    return ("resize", int(size), method)


def _resize_size(steps: list[tuple]) -> int | None:
    sizes = [s[1] for s in steps if s[0] == "resize"]
    return sizes[-1] if sizes else None


def _float32(value: float) -> str:
    return f"np.float32({value!r})"


def _step_lines(step: tuple) -> list[str]:
    """The lines of preprocess() for one step, float32 throughout."""
    kind = step[0]
    if kind == "resize":
        return [f"    if x.shape[1] != {step[1]} or x.shape[2] != {step[1]}:",
                f"        x = _resize(x, {step[1]}, {step[2]!r})"]
    if kind == "bgr":
        return ["    x = x[..., ::-1]"]
    num, den = step[1], step[2]
    if kind == "offset":
        return [f"    x = x + {_float32(num if den is None else num / den)}"]
    if den is None:
        return [f"    x = x * {_float32(num)}"]
    if num == 1:
        return [f"    x = x / {_float32(den)}"]  # as `x / 255.0` is written, to the last bit
    return [f"    x = x * {_float32(num)} / {_float32(den)}"]


def _generate(text: str, steps: list[tuple]) -> str:
    """The numpy-only source of `preprocess(images)` for these steps (plus the verbatim resize functions if needed)."""
    body = [line for step in steps for line in [f"    # {_describe(step)}", *_step_lines(step)]]
    source = (
        f'"""Declared preprocessing {text!r} (generated by cbtool): (N, H, W, 3) pixels -> float32 (N, S, S, 3)."""\n\n'
        "import numpy as np\n\n\n"
        "def preprocess(images):\n"
        "    x = np.asarray(images)\n"
        "    if x.ndim == 3:\n"
        "        x = x[None]\n"
        "    if x.ndim != 4 or x.shape[-1] != 3:\n"
        '        raise ValueError("expected images of shape (N, H, W, 3), got %s" % (x.shape,))\n'
        "    x = x.astype(np.float32)\n"
        + "".join(line + "\n" for line in body)
        + "    return np.ascontiguousarray(x, dtype=np.float32)\n"
    )
    if any(s[0] == "resize" for s in steps):
        source += "\n\n# resize: verbatim from cbtool's toolkit/preprocessing.py\n\n" + _resize_source()
    return source


def _describe(step: tuple) -> str:
    if step[0] == "resize":
        return f"resize:{step[1]}:{step[2]}"
    if step[0] == "bgr":
        return "bgr"
    return f"{step[0]}:{_literal(step[1])}" + ("" if step[2] is None else f"/{_literal(step[2])}")


def _literal(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _resize_source() -> str:
    """toolkit/preprocessing.py's module-level functions other than `preprocess`, cut out verbatim."""
    from toolkit.provenance import preprocessing_source

    source = preprocessing_source()
    tree = ast.parse(source)
    parts = [ast.get_source_segment(source, node) for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.name != "preprocess"]
    return "\n\n\n".join(parts) + "\n"


# --- files --------------------------------------------------------------------------------------------------------

def _file_spec(text: str) -> PreprocessSpec:
    """A user's numpy-only preprocess file, verbatim; refused with the offending line."""
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"--preprocess {text}: no such file (expected a .py file defining preprocess(images))")
    source = path.read_text(encoding="utf-8")
    _check_file(path, source)
    body = source if source.endswith("\n") else source + "\n"
    return PreprocessSpec(text, body, SPEC_BLOCK_NAME, None)


def _check_file(path: Path, source: str) -> None:
    """Numpy-only imports and a top-level `preprocess` taking the images: the grader's model.py runs this text."""
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})") from None
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            names = ["__import__(...)"]
        for name in names:
            if name.split(".")[0] != "numpy":
                raise ConfigError(f"{path}:{node.lineno}: imports {name!r}; a --preprocess file may import numpy only "
                                  "(it is copied into model.py, which runs where only numpy is certain)")
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "preprocess"]
    if not defs or not (defs[-1].args.posonlyargs or defs[-1].args.args or defs[-1].args.vararg):
        raise ConfigError(f"{path}: expected a top-level function preprocess(images); found none")
