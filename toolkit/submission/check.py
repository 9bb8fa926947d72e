"""`cbtool check`: static checks of a submission zip against a profile's contract. Fast: no TensorFlow import.

Each issue names the file or symbol, what the grader expects and what was found.
"""

from __future__ import annotations

import ast
import io
import json
import os
import stat
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import Profile

FLAGGED = {
    "keras_cv": "keras_cv is not known to be installed on the grader; use core Keras layers",
    "keras_hub": "keras_hub is not known to be installed on the grader",
    "keras_nlp": "keras_nlp is not known to be installed on the grader",
    "cv2": "opencv-python (cv2) is not known to be installed on the grader; use numpy or tf.image",
    "toolkit": "cbtool is not installed on the grader; a submission must not import it",
    "cbtool": "cbtool is not installed on the grader; a submission must not import it",
}
JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db", "__pycache__/")
KERAS_MODULE_PREFIXES = ("keras", "builtins")


@dataclass
class Issue:
    """One contract violation: `code` (machine name), where (`file`, `symbol`), `expected`, `found`."""

    code: str
    file: str
    symbol: str
    expected: str
    found: str

    @property
    def message(self) -> str:
        where = f"{self.file}: {self.symbol}" if self.symbol else self.file
        return f"{where}: expected {self.expected}; found {self.found}"

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def check_submission(zip_path: str | os.PathLike, profile: Profile) -> dict:
    """Run every static check; return {"ok", "zip", "profile", "issues": [...], "entries", "zip_mb"}."""
    zip_path = Path(zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SubmissionError(f"{zip_path}: not a readable zip file ({exc})") from exc
    issues: list[Issue] = []
    with zf:
        names = [i.filename for i in zf.infolist()]
        issues += _layout(zf)
        issues += _size(zip_path, zf, profile)
        if "model.py" in names:
            source = zf.read("model.py").decode("utf-8", "replace")
            local = {n.split("/")[0].removesuffix(".py") for n in names}
            issues += _model_py(source, profile, local)
        for name in names:
            if name.endswith(".keras"):
                issues += _keras_file(name, zf.read(name), profile)
        if int(profile.contract) == 2023 and "metadata" not in names:
            issues.append(Issue("missing_metadata", "metadata", "", "an empty file named `metadata` at the zip root "
                                "(CodaLab 2023 treats the zip as a code submission only with it)", "no `metadata` entry"))
    return {"ok": not issues, "zip": str(zip_path), "profile": profile.name, "contract": int(profile.contract),
            "entries": names, "zip_mb": zip_path.stat().st_size / 2**20, "issues": [i.to_dict() for i in issues]}


def render(report: dict) -> str:
    """Human text for a check report."""
    if report["ok"]:
        return f"ok: {report['zip']} passes the {report['profile']} contract checks ({len(report['entries'])} entries, {report['zip_mb']:.2f} MiB)"
    lines = [f"{report['zip']}: {len(report['issues'])} problem(s) for profile {report['profile']}"]
    lines += [f"  [{i['code']}] {i['message']}" for i in report["issues"]]
    return "\n".join(lines)


# --- layout and size ----------------------------------------------------------------------------------------------


def _layout(zf: zipfile.ZipFile) -> list[Issue]:
    issues = []
    names = [i.filename for i in zf.infolist()]
    for info in zf.infolist():
        name = info.filename
        if any(part in name for part in JUNK):
            issues.append(Issue("junk_entry", name, "", "no OS metadata entries (__MACOSX, .DS_Store)", f"entry {name!r}"))
        if name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
            issues.append(Issue("unsafe_path", name, "", "relative entry names inside the submission", f"entry {name!r}"))
        if stat.S_ISLNK(info.external_attr >> 16):
            issues.append(Issue("symlink", name, "", "regular files", "a symbolic link"))
    if "model.py" not in names:
        nested = sorted(n for n in names if n.endswith("/model.py") and "__MACOSX" not in n)
        if nested:
            issues.append(Issue("wrapping_folder", nested[0], "", "model.py at the zip root (the grader extracts flat; "
                                "zip the folder's contents, not the folder)", f"model.py inside folder {nested[0].rsplit('/', 1)[0]!r}"))
        else:
            issues.append(Issue("missing_model_py", "model.py", "", "model.py at the zip root", f"entries {names[:8]}"))
    return issues


def _size(zip_path: Path, zf: zipfile.ZipFile, profile: Profile) -> list[Issue]:
    size_mb = zip_path.stat().st_size / 2**20
    if size_mb > float(profile.size_limit_mb):
        biggest = max(zf.infolist(), key=lambda i: i.file_size, default=None)
        detail = f"; largest entry {biggest.filename} {biggest.file_size / 2**20:.1f} MiB" if biggest else ""
        return [Issue("too_large", zip_path.name, "", f"at most {float(profile.size_limit_mb):g} MiB for {profile.name} "
                      "(try --fp16 or a smaller variant)", f"{size_mb:.2f} MiB{detail}")]
    return []


# --- model.py -----------------------------------------------------------------------------------------------------


def _model_py(source: str, profile: Profile, local: set[str]) -> list[Issue]:
    try:
        tree = ast.parse(source, filename="model.py")
    except SyntaxError as exc:
        return [Issue("syntax_error", "model.py", f"line {exc.lineno}", "valid Python", f"SyntaxError: {exc.msg}")]
    return _contract(tree, profile) + _imports(tree, profile, local)


def _contract(tree: ast.Module, profile: Profile) -> list[Issue]:
    y2024 = int(profile.contract) == 2024
    want = "Model" if y2024 else "model"
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    if want not in classes:
        found = ", ".join(f"class {c}" for c in classes) or "no top-level class"
        return [Issue("class_name", "model.py", f"class {want}", f"a top-level `class {want}` (contract {profile.contract})", found)]
    methods = {n.name: n for n in classes[want].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    issues = []
    init_expected = "__init__(self)" if y2024 else "__init__(self, path)"
    init_required = 0 if y2024 else 1
    if "__init__" in methods:
        init = methods["__init__"]
        if not _accepts(init, init_required):
            issues.append(Issue("signature", "model.py", f"{want}.__init__", init_expected, _signature(init)))
    elif not y2024:
        issues.append(Issue("signature", "model.py", f"{want}.__init__", init_expected, "no __init__ (model(path) raises TypeError)"))
    predict = methods.get("predict")
    if predict is None:
        issues.append(Issue("signature", "model.py", f"{want}.predict", "predict(self, X)", "no predict method"))
    elif not _accepts(predict, 1):
        issues.append(Issue("signature", "model.py", f"{want}.predict", "predict(self, X)", _signature(predict)))
    return issues


def _accepts(fn: ast.FunctionDef, positional: int) -> bool:
    """True when fn(self, <positional args>) binds: enough positional slots, no other required parameter."""
    args = fn.args
    params = [*args.posonlyargs, *args.args]
    if any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list) or not params:
        return False
    required = len(params) - len(args.defaults)
    slots = len(params) - 1
    kwonly_required = any(d is None for d in args.kw_defaults)
    return required - 1 <= positional and (slots >= positional or args.vararg is not None) and not kwonly_required


def _signature(fn: ast.FunctionDef) -> str:
    return f"{fn.name}({ast.unparse(fn.args)})"


def _imports(tree: ast.Module, profile: Profile, local: set[str]) -> list[Issue]:
    allowed = set(profile.importable) | set(sys.stdlib_module_names) | local
    issues, seen = [], set()
    for node, where in _import_nodes(tree):
        for root in _roots(node):
            if (root, where) in seen:
                continue
            seen.add((root, where))
            symbol = f"import {root}" + (f" (inside {where})" if where else "") + f" line {node.lineno}"
            if root in FLAGGED:
                issues.append(Issue("forbidden_import", "model.py", symbol, FLAGGED[root], f"`import {root}`"))
            elif root not in allowed:
                issues.append(Issue("unavailable_import", "model.py", symbol, f"only modules {profile.name} has: "
                                    f"{', '.join(sorted(profile.importable))} and the standard library", f"`import {root}`"))
    return issues


def _import_nodes(tree: ast.Module):
    """Every import, with the function it sits in ('' at module level, including under if/try)."""
    stack = [(node, "") for node in tree.body]
    while stack:
        node, where = stack.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, where
            continue
        inner = where
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = f"{where}.{node.name}".lstrip(".")
        elif isinstance(node, ast.ClassDef):
            inner = f"{where}.{node.name}".lstrip(".")
        stack.extend((child, inner) for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def _roots(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if node.level:  # relative import: a module of the submission itself
        return []
    return [(node.module or "").split(".")[0]]


# --- .keras files -------------------------------------------------------------------------------------------------


def _keras_file(name: str, data: bytes, profile: Profile) -> list[Issue]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            config = json.loads(inner.read("config.json")) if "config.json" in inner.namelist() else {}
            metadata = json.loads(inner.read("metadata.json")) if "metadata.json" in inner.namelist() else {}
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        return [Issue("keras_unreadable", name, "", "a Keras 3 .keras archive (config.json, metadata.json)", str(exc))]
    issues = []
    saved = str(metadata.get("keras_version", ""))
    runtime = profile.keras_version
    if int(profile.keras_major) < 3:
        issues.append(Issue("keras_version", name, "metadata.json keras_version", f"a format {profile.name}'s Keras "
                            f"{runtime or profile.keras_major} can load (it predates .keras v3 archives; use --format portable)",
                            f".keras saved by Keras {saved or '3'}"))
    elif saved and runtime and _version(saved) > _version(runtime):
        issues.append(Issue("keras_version", name, "metadata.json keras_version", f"Keras <= {runtime} (the {profile.name} "
                            "runtime; newer .keras configs carry arguments it rejects, e.g. 'input_axes'; use --format portable)",
                            f"saved by Keras {saved}"))
    importable = set(profile.importable)
    for module, cls in sorted(_classes(config)):
        root = module.split(".")[0]
        if root in FLAGGED or (root not in KERAS_MODULE_PREFIXES and root not in importable):
            issues.append(Issue("keras_class", name, f"config.json class {cls}", f"classes from modules {profile.name} can "
                                "import (core keras)", f"{cls} from {module}"))
    return issues


def _classes(config) -> set[tuple[str, str]]:
    found, stack = set(), [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str) and isinstance(item.get("module"), str):
                found.add((item["module"], item["class_name"]))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
