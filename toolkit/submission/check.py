"""`cbtool check`: static checks of a submission zip against a profile's contract. Fast: no TensorFlow import.

Each issue names the file or symbol, what the grader expects and what was found.
"""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass, field

from toolkit.artifacts import SUBMISSION_FILES
from toolkit.contract import METHODS, Contract
from toolkit.results import Issue, Result
from toolkit.runtime.profiles import Profile
from toolkit.submission_zip import SubmissionZip

FLAGGED = {
    "keras_cv": "keras_cv is not known to be installed on the grader; use core Keras layers",
    "keras_hub": "keras_hub is not known to be installed on the grader",
    "keras_nlp": "keras_nlp is not known to be installed on the grader",
    "cv2": "opencv-python (cv2) is not known to be installed on the grader; use numpy or tf.image",
    "toolkit": "cbtool is not installed on the grader; a submission must not import it",
    "cbtool": "cbtool is not installed on the grader; a submission must not import it",
}
KERAS_MODULE_PREFIXES = ("keras", "builtins")
__all__ = ["CheckReport", "Issue", "check_submission", "render"]


@dataclass
class CheckReport(Result):
    """What `cbtool check` found: `ok` when there is no issue; sizes of the zip and of what it unpacks to."""

    ok: bool
    zip: str
    profile: str
    contract: int | str
    entries: list[str]
    zip_mb: float
    unpacked_mb: float
    issues: list[Issue] = field(default_factory=list)


def check_submission(zip_path: str | os.PathLike, profile: Profile) -> CheckReport:
    """Run every static check of the zip against `profile` (its contract, importable modules, limits)."""
    with SubmissionZip(zip_path) as sub:
        issues = sub.layout_issues() + sub.size_issues(profile.size_limit_mb, profile.unpacked_limit_mb, profile.name)
        source = sub.model_py
        if source is not None:
            local = {n.removesuffix(".py") for n in sub.top_level()}
            issues += _model_py(source, profile, local)
        for name in sub.names:
            if name.endswith(".keras"):
                issues += _keras_file(name, sub.read(name), profile)
        if profile.contract.metadata and not sub.has(SUBMISSION_FILES.METADATA):
            issues.append(Issue("missing_metadata", "metadata", "", "an empty file named `metadata` at the zip root "
                                f"(the {profile.name} contract marks a code submission with it)", "no `metadata` entry"))
        return CheckReport(ok=not issues, zip=str(zip_path), profile=profile.name, contract=profile.contract.key,
                           entries=list(sub.names), zip_mb=sub.size_bytes / 2**20, unpacked_mb=sub.unpacked_bytes / 2**20,
                           issues=issues)


def render(report: CheckReport) -> str:
    """Human text for a check report."""
    if report.ok:
        return (f"ok: {report.zip} passes the {report.profile} contract checks ({len(report.entries)} entries, "
                f"{report.zip_mb:.2f} MiB, {report.unpacked_mb:.2f} MiB unpacked)")
    lines = [f"{report.zip}: {len(report.issues)} problem(s) for profile {report.profile}"]
    lines += [f"  [{i.code}] {i.message}" for i in report.issues]
    return "\n".join(lines)


# --- model.py -----------------------------------------------------------------------------------------------------


def _model_py(source: str, profile: Profile, local: set[str]) -> list[Issue]:
    try:
        tree = ast.parse(source, filename="model.py")
    except SyntaxError as exc:
        return [Issue("syntax_error", "model.py", f"line {exc.lineno}", "valid Python", f"SyntaxError: {exc.msg}")]
    return _contract(tree, profile.contract) + _imports(tree, profile, local)


def _contract(tree: ast.Module, contract: Contract) -> list[Issue]:
    """The contract's class at top level, its constructor and every method the grader calls, by signature."""
    want = contract.class_name
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    if want not in classes:
        found = ", ".join(f"class {c}" for c in classes) or "no top-level class"
        return [Issue("class_name", "model.py", f"class {want}", f"a top-level `class {want}` (contract {contract.key})", found)]
    methods = {n.name: n for n in classes[want].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    issues = []
    init = methods.get("__init__")
    if init is not None and not _accepts(init, len(contract.init_args)):
        issues.append(Issue("signature", "model.py", f"{want}.__init__", contract.init_signature(), _signature(init)))
    elif init is None and contract.init_args:
        issues.append(Issue("signature", "model.py", f"{want}.__init__", contract.init_signature(),
                            f"no __init__ ({want}({', '.join(contract.init_args)}) raises TypeError)"))
    for name in contract.methods:
        method = methods.get(name)
        if method is None:
            issues.append(Issue("signature", "model.py", f"{want}.{name}", contract.method_signature(name), f"no {name} method"))
        elif not _accepts(method, len(METHODS[name])):
            issues.append(Issue("signature", "model.py", f"{want}.{name}", contract.method_signature(name), _signature(method)))
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
