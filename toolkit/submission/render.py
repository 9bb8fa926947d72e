"""Render the model.py templates (package data, toolkit/submission/templates/) into a self-contained model.py,
and read its embedded source blocks back."""

from __future__ import annotations

import json
import re
from pathlib import Path

from toolkit.artifacts import FORMATS, FRAMEWORKS
from toolkit.errors import SubmissionError
from toolkit.fsutil import sha256_text
from toolkit.tta import TTA_VIEWS

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TOOLKIT_DIR = Path(__file__).resolve().parents[1]
BEGIN = "# ---- BEGIN toolkit/{name} sha256={sha} ----"
END = "# ---- END toolkit/{name} ----"
_BLOCK = re.compile(r"^# ---- BEGIN toolkit/(?P<name>\S+) sha256=(?P<sha>[0-9a-f]{64}) ----\n(?P<body>.*?)^# ---- END toolkit/(?P=name) ----$",
                    re.S | re.M)
TTA_CHOICES = tuple(TTA_VIEWS)
_FRAMEWORKS = {**FRAMEWORKS, "foreign": "tensorflow"}

_KERAS_LOAD = "        self.net = keras.models.load_model(os.path.join(base, WEIGHTS_FILE), compile=False)"
_KERAS_FORWARD = ("        y = self.net(x, training=False)\n"
                  "        return np.asarray(y.numpy() if hasattr(y, \"numpy\") else y, dtype=np.float64)")
_KERAS_IMPORTS = "import tensorflow as tf\nfrom tensorflow import keras\n"
# "foreign" (`--from-keras`): the notebook's model, saved by the runtime's own Keras in its native format
_LOAD = {
    "portable": ("        self.net = build_model(MODEL_SPEC)\n"
                 "        load_weights_npz(self.net, os.path.join(base, WEIGHTS_FILE))"),
    "keras": _KERAS_LOAD,
    "onnx": ("        self.session = ort.InferenceSession(os.path.join(base, WEIGHTS_FILE), providers=[\"CPUExecutionProvider\"])\n"
             "        self.input_name = self.session.get_inputs()[0].name"),
    "foreign": _KERAS_LOAD,
}
# --int8 (portable): weights.npz holds int8 kernels, dequantized by the embedded toolkit/int8.py
_INT8_LOAD = ("        self.net = build_model(MODEL_SPEC)\n"
              "        load_weights_npz(self.net, os.path.join(base, WEIGHTS_FILE), decode=dequantize_arrays)")
_FORWARD = {
    "portable": _KERAS_FORWARD, "keras": _KERAS_FORWARD, "foreign": _KERAS_FORWARD,
    "onnx": "        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64)",
}
# An ensemble's members (templates/ensemble.py.tmpl): module-level load and forward of one network.
_LOAD_MEMBER = {
    "portable": ("    net = build_model(member[\"spec\"])\n"
                 "    load_weights_npz(net, os.path.join(base, member[\"weights_file\"]))\n"
                 "    return net"),
    "keras": "    return keras.models.load_model(os.path.join(base, member[\"weights_file\"]), compile=False)",
    "onnx": "    return ort.InferenceSession(os.path.join(base, member[\"weights_file\"]), providers=[\"CPUExecutionProvider\"])",
}
_INT8_LOAD_MEMBER = ("    net = build_model(member[\"spec\"])\n"
                     "    load_weights_npz(net, os.path.join(base, member[\"weights_file\"]), decode=dequantize_arrays)\n"
                     "    return net")
_NET_FORWARD = ("    y = net(x, training=False)\n"
                "    return np.asarray(y.numpy() if hasattr(y, \"numpy\") else y, dtype=np.float64)")
_FORWARD_NET = {"portable": _NET_FORWARD, "keras": _NET_FORWARD,
                "onnx": "    return np.asarray(net.run(None, {net.get_inputs()[0].name: x})[0], dtype=np.float64)"}
_IMPORTS = {"portable": "", "keras": _KERAS_IMPORTS, "onnx": "import onnxruntime as ort\n", "foreign": _KERAS_IMPORTS}
_BLOCKS_TEXT = ("The marked blocks below are verbatim copies of cbtool's toolkit/preprocessing.py, toolkit/tta.py (and, for the\n"
                "portable format, the model family's architecture file and, with int8 weights, toolkit/int8.py), with their\n"
                "sha256 on the marker lines. `cbtool validate-preprocessing` proves this file feeds the network the same\n"
                "bytes as training.")
_FOREIGN_BLOCKS_TEXT = ("The marked blocks below are the preprocessing declared at build (`--preprocess {spec}`, verbatim) and\n"
                        "cbtool's toolkit/tta.py, with their sha256 on the marker lines. The network is the notebook's model\n"
                        "re-expressed for this runtime's Keras and proved to match the original within {atol:g} on probe images.\n"
                        "`cbtool validate-preprocessing --preprocess {spec}` proves this file feeds the network what the spec computes.")


def embedded_block(name: str, source: str) -> str:
    """`source` between BEGIN/END marker lines that carry its sha256."""
    body = source if source.endswith("\n") else source + "\n"
    return "\n".join([BEGIN.format(name=name, sha=sha256_text(source)), body + END.format(name=name)])


def extract_blocks(model_py: str) -> dict[str, dict]:
    """{name: {"sha256_marker", "sha256_body", "source"}} for every embedded block of a rendered model.py."""
    blocks = {}
    for match in _BLOCK.finditer(model_py):
        body = match.group("body")
        blocks[match.group("name")] = {"sha256_marker": match.group("sha"), "sha256_body": sha256_text(body), "source": body}
    return blocks


def render_model_py(spec: dict, classes: list[str], preprocessing: dict, *, profile, fmt: str, tta: str,
                    batch_size: int, version: str, int8: bool = False) -> str:
    """The text of model.py for this model, the profile's contract, the weight format and TTA; `int8`: the portable
    weights.npz holds int8 kernels (toolkit/int8.py embedded to dequantize them; an int8 model.onnx needs nothing)."""
    if fmt not in FORMATS:
        raise SubmissionError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    values = {
        "VARIANT": str(spec.get("variant", "model")), "FORMAT": fmt,
        "MODEL_CONSTANTS": _constants(spec, int(preprocessing["input_size"]), str(preprocessing.get("resize", "bilinear")),
                                      FORMATS[fmt]),
        "EMBEDDED": _embedded(embedded_sources(spec, fmt, int8)), "BLOCKS_TEXT": _BLOCKS_TEXT,
        "PREPROCESS_CALL": "preprocess(x[start:start + BATCH_SIZE], INPUT_SIZE, RESIZE)",
    }
    if int8 and fmt == "portable":
        values["LOAD"] = _INT8_LOAD
    return _render(values, classes, profile=profile, tta=tta, batch_size=batch_size, version=version)


def render_ensemble_model_py(members: list[dict], classes: list[str], *, profile, fmt: str, batch_size: int,
                             version: str, int8: bool = False) -> str:
    """model.py averaging several cbtool networks. `members`: dicts with name, spec, input_size, resize, weights_file
    (in the zip), tta and weight (the weights sum to 1), in the manifest's order. Every family's architecture is one
    embedded file, so the blocks are the single model's; the class is templates/ensemble.py.tmpl. `int8`: some
    member's weights.npz holds int8 kernels (every portable member then loads through dequantize_arrays, which leaves
    float files as they are)."""
    if fmt not in FORMATS:
        raise SubmissionError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    for member in members:
        if member["tta"] not in TTA_CHOICES:
            raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, found {member['tta']!r}")
    keys = ("name", "spec", "input_size", "resize", "weights_file", "tta", "weight")
    listing = ",\n".join("    " + repr(_plain({k: m[k] for k in keys})) for m in members)
    sources = []
    for member in members:
        sources += [n for n in embedded_sources(member["spec"], fmt, int8) if n not in sources]
    variants = ", ".join(str(m["spec"].get("variant")) for m in members)
    values = {
        "VARIANT": f"ensemble of {len(members)} ({variants})", "FORMAT": fmt,
        "MODEL_CONSTANTS": (f"# The members, in the manifest's order: softmax averaged per member over its TTA views, then "
                            f"weighted.\nMEMBERS = [\n{listing},\n]\n"
                            "MEMBER = None  # None: the weighted ensemble; an index: that member alone (cbtool simulate "
                            "scores each member this way)"),
        "EMBEDDED": _embedded(sources), "BLOCKS_TEXT": _BLOCKS_TEXT, "PREPROCESS_CALL": "",
    }
    if int8 and fmt == "portable":
        values["LOAD_MEMBER"] = _INT8_LOAD_MEMBER
    return _render(values, classes, profile=profile, tta=None, batch_size=batch_size, version=version,
                   tta_text="per member (" + ", ".join(m["tta"] for m in members) + ")")


def _constants(spec: dict, input_size, resize, weights: str) -> str:
    """A single network's module constants."""
    return "\n".join([f"MODEL_SPEC = {_plain(spec)!r}", f"INPUT_SIZE = {input_size!r}", f"RESIZE = {resize!r}",
                      f"WEIGHTS_FILE = {weights!r}"])


def render_foreign_model_py(source: dict, classes: list[str], pspec, *, weights_file: str, input_size: int | None,
                            profile, tta: str, batch_size: int, version: str, atol: float) -> str:
    """model.py for a notebook's model (`--from-keras`): load `weights_file` (saved by the runtime's own Keras), the
    declared preprocessing `pspec` (toolkit.preprocess_spec.PreprocessSpec) and toolkit/tta.py embedded verbatim."""
    values = {
        "VARIANT": str(source.get("file", "model")), "FORMAT": "foreign",
        "MODEL_CONSTANTS": _constants(source, input_size, None, weights_file),
        "EMBEDDED": "\n\n".join([embedded_block(pspec.name, pspec.source), _embedded(["tta.py"])]),
        "BLOCKS_TEXT": _FOREIGN_BLOCKS_TEXT.format(spec=pspec.text, atol=atol),
        "PREPROCESS_CALL": "preprocess(x[start:start + BATCH_SIZE])",
    }
    return _render(values, classes, profile=profile, tta=tta, batch_size=batch_size, version=version)


def _render(values: dict[str, str], classes: list[str], *, profile, tta: str | None, batch_size: int, version: str,
            tta_text: str | None = None) -> str:
    """Fill the templates: the format's `values` plus what the profile's contract, classes, TTA and batch say.
    `tta` None (an ensemble): each member's own mode, `tta_text` says which; the class is the ensemble's."""
    if tta is not None and tta not in TTA_CHOICES:
        raise SubmissionError(f"--tta: expected one of {', '.join(TTA_CHOICES)}, found {tta!r}")
    contract, fmt = profile.contract, values["FORMAT"]
    values = {
        **values, "NUM_CLASSES": str(len(classes)), "PROFILE": profile.name, "TTA": tta_text or str(tta),
        "CONTRACT_TEXT": contract.describe(), "CLASS_LINE": _class_line(contract),
        "INPUT_TEXT": f"{' or '.join(contract.dtypes)} as {'a tf.Tensor' if contract.tensor_input else 'numpy'}",
        "RESOLVE_TEXT": "the `path` argument" if contract.takes_path else "os.path.dirname(os.path.abspath(__file__))",
        "CWD_TEXT": _CWD_TEXT[contract.cwd], "FRAMEWORK": _FRAMEWORKS[fmt], "CBTOOL_VERSION": version,
        "FRAMEWORK_IMPORTS": _IMPORTS[fmt], "CLASS_NAMES": json.dumps(list(classes)), "FORMAT_REPR": repr(fmt),
        "TTA_REPR": repr(tta) + ("  # None: each member's own mode (MEMBERS); a mode here overrides them all"
                                                    if tta is None else ""), "BATCH_SIZE": str(int(batch_size)),
    }
    values["CLASS_CODE"] = _fill((TEMPLATE_DIR / ("class.py.tmpl" if tta is not None else "ensemble.py.tmpl")).read_text(encoding="utf-8"), {
        "CLASS_NAME": contract.class_name, "CONTRACT_TEXT": contract.describe(),
        "INIT_ARGS": ", ".join(("self", *contract.init_args)),
        "BASE_DIR": "os.path.abspath(path)" if contract.takes_path else "os.path.dirname(os.path.abspath(__file__))",
        "LOAD": values.get("LOAD", _LOAD[fmt]), "FORWARD": _FORWARD[fmt], "PREPROCESS_CALL": values["PREPROCESS_CALL"],
        "LOAD_MEMBER": values.get("LOAD_MEMBER", _LOAD_MEMBER.get(fmt, "")), "FORWARD_NET": _FORWARD_NET.get(fmt, ""),
    })
    return _fill((TEMPLATE_DIR / "model.py.tmpl").read_text(encoding="utf-8"), values)


_CWD_TEXT = {"submission": "they run inside the submission folder", "program": "they run from their own program folder",
             "unknown": "nothing about the working directory"}


def _class_line(contract) -> str:
    args = ", ".join(contract.init_args)
    where = " with path = the submission folder" if contract.takes_path else " takes no arguments"
    return f"{contract.class_name}({args}){where}"


def embedded_sources(spec: dict, fmt: str, int8: bool = False) -> list[str]:
    """The toolkit files model.py carries verbatim: preprocessing, TTA views, and (portable) the family's architecture,
    plus with `int8` the int8 weights format."""
    if fmt != "portable":
        return ["preprocessing.py", "tta.py"]
    from toolkit.families import family_of

    return ["preprocessing.py", "tta.py", family_of(str(spec.get("variant"))).arch_source, *(["int8.py"] if int8 else [])]


def _embedded(names: list[str]) -> str:
    return "\n\n".join(embedded_block(n, (TOOLKIT_DIR / n).read_text(encoding="utf-8")) for n in names)


def _fill(template: str, values: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise SubmissionError(f"submission template: no value for placeholder @@{key}@@")
        return values[key]

    # one pass, so placeholders inside substituted text (embedded sources) are never touched
    return re.sub(r"@@([A-Z0-9_]+)@@", sub, template)


def _plain(value):
    """JSON-shaped data with only str/int/float/bool/None/list/dict, so repr() is valid Python."""
    return json.loads(json.dumps(value))
