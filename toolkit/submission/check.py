"""`cbtool check`: static checks of a submission zip against a profile's contract. Fast: no TensorFlow import.

Each issue names the file or symbol, what the grader expects and what was found, and has a severity: an error
fails the check; a warning (a bare relative file name under a grader that runs inside the submission folder, a
model file whose compatibility could not be verified) is shown and leaves it passing. Model files (.keras, .h5) are
judged by what the profile's Keras accepts (toolkit.runtime.keras_compat), undefined names by pyflakes.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import sys
from collections import Counter
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
    """What `cbtool check` found: `ok` when no issue is an error (warnings are reported and pass); sizes of the zip
    and of what it unpacks to; `keras_files`: the Keras version that saved each model file; `runtime_keras`: the
    profile runtime's Keras when check could ask it."""

    ok: bool
    zip: str
    profile: str
    contract: int | str
    entries: list[str]
    zip_mb: float
    unpacked_mb: float
    issues: list[Issue] = field(default_factory=list)
    errors: int = 0
    warnings: int = 0
    keras_files: dict[str, str | None] = field(default_factory=dict)
    runtime_keras: str | None = None


def check_submission(zip_path: str | os.PathLike, profile: Profile) -> CheckReport:
    """Run every static check of the zip against `profile` (its contract, importable modules, Keras, limits)."""
    with SubmissionZip(zip_path) as sub:
        issues = sub.layout_issues() + sub.size_issues(profile.size_limit_mb, profile.unpacked_limit_mb, profile.name)
        source = sub.model_py
        if source is not None:
            local = {n.removesuffix(".py") for n in sub.top_level()}
            issues += _model_py(source, profile, local, _zip_paths(sub.names))
        target, versions = _Target(profile), {}
        for name in sub.names:
            if name.lower().endswith(MODEL_SUFFIXES) and "__MACOSX/" not in name:  # junk is reported by layout
                issues += _model_file(name, sub.read(name, max_bytes=sub.unpacked_bytes), profile, target, versions)
        issues += _class_count(sub.manifest, profile)
        if profile.contract.metadata and not sub.has(SUBMISSION_FILES.METADATA):
            issues.append(Issue("missing_metadata", "metadata", "", "an empty file named `metadata` at the zip root "
                                f"(the {profile.name} contract marks a code submission with it)", "no `metadata` entry"))
        errors = sum(i.severity == "error" for i in issues)
        return CheckReport(ok=not errors, zip=str(zip_path), profile=profile.name, contract=profile.contract.key,
                           entries=list(sub.names), zip_mb=sub.size_bytes / 2**20, unpacked_mb=sub.unpacked_bytes / 2**20,
                           issues=issues, errors=errors, warnings=len(issues) - errors, keras_files=versions,
                           runtime_keras=target.target.version if target.target else None)


def render(report: CheckReport) -> str:
    """Human text for a check report: errors first, then warnings."""
    ordered = sorted(report.issues, key=lambda i: i.severity != "error")
    lines = [f"  [{i.code}] {'warning: ' if i.severity != 'error' else ''}{i.message}" for i in ordered]
    if report.ok:
        note = f", {report.warnings} warning(s)" if report.warnings else ""
        head = (f"ok: {report.zip} passes the {report.profile} contract checks ({len(report.entries)} entries, "
                f"{report.zip_mb:.2f} MiB, {report.unpacked_mb:.2f} MiB unpacked{note})")
        return "\n".join([head, *lines])
    warned = f" and {report.warnings} warning(s)" if report.warnings else ""
    return "\n".join([f"{report.zip}: {report.errors} problem(s){warned} for profile {report.profile}", *lines])


def _class_count(manifest: dict, profile: Profile) -> list[Issue]:
    """The manifest's class count (its class names, else the model spec's) against the one the contract scores; a
    zip without either (not built by cbtool) says nothing here: simulate checks the predicted range."""
    want, classes = profile.contract.num_classes, manifest.get("classes")
    count = len(classes) if isinstance(classes, list) else (manifest.get("model") or {}).get("num_classes")
    if want is None or not isinstance(count, int) or count == want:
        return []
    names = f" ({', '.join(map(str, classes))})" if isinstance(classes, list) else ""
    return [Issue("class_count", SUBMISSION_FILES.MANIFEST, "classes", f"{want} classes (profile {profile.name}'s grader "
                  f"scores {want})", f"a model of {count} classes{names}: was a class missing from the training data? "
                  f"Retrain on data holding all {want}, or use a profile whose contract says {count}")]


# --- model.py -----------------------------------------------------------------------------------------------------


def _model_py(source: str, profile: Profile, local: set[str], entries: set[str]) -> list[Issue]:
    try:
        tree = ast.parse(source, filename="model.py")
    except SyntaxError as exc:
        return [Issue("syntax_error", "model.py", f"line {exc.lineno}", "valid Python", f"SyntaxError: {exc.msg}")]
    return (_contract(tree, profile.contract) + _imports(tree, profile, local) + _undefined_names(source)
            + _relative_opens(tree, entries, profile.contract))


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


# --- undefined names (pyflakes) -----------------------------------------------------------------------------------


def _undefined_names(source: str) -> list[Issue]:
    """Names model.py uses but never defines or imports (a NameError when that line runs); nothing else pyflakes says."""
    from pyflakes import checker, messages

    tree = ast.parse(source, filename="model.py")
    found = checker.Checker(tree, filename="model.py").messages
    undefined = (messages.UndefinedName, messages.UndefinedExport, messages.UndefinedLocal)
    issues = []
    for message in sorted((m for m in found if isinstance(m, undefined)), key=lambda m: (m.lineno, m.col)):
        name = message.message_args[0]
        what = "listed in __all__ but" if isinstance(message, messages.UndefinedExport) else "used but"
        issues.append(Issue("undefined_name", "model.py", f"{name} line {message.lineno}", "every name defined or imported "
                            "before use", f"`{name}` {what} never defined or imported (NameError when that line runs)"))
    return issues


# --- file names resolved against the working directory ------------------------------------------------------------

_CWD_EFFECT = {
    "submission": "it works there (inside the submission folder), and fails under a grader that runs from its program folder",
    "program": "it fails there (FileNotFoundError: the name resolves against the ingestion program's folder)",
    "unknown": "may fail: the name resolves against whatever folder the grader runs in",
}
_LISTING = ("listdir", "scandir", "walk", "glob", "iglob", "Path")  # calls where '.' means "the working directory"
# Calls that take a path: only these count for a bare name without '.' or '/' (a SavedModel folder 'SubmissionModel'),
# which could as well be an attribute name or a label.
_PATH_CALLS = (*_LISTING, "open", "load", "load_model", "load_weights", "exists", "isdir", "isfile", "File", "loadtxt",
               "fromfile", "read_csv", "imread", "TFSMLayer")
_JOIN = ("join",)


def _relative_opens(tree: ast.Module, entries: set[str], contract: Contract) -> list[Issue]:
    """String literals naming a file/folder of the zip (or '.') passed straight to a call: they resolve against the
    grader's working directory, which the profile's contract records (`cwd`)."""
    constants = _string_constants(tree)
    issues, seen = [], set()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func = _call_name(call.func)
        args = [*call.args, *(k.value for k in call.keywords)]
        if func.rsplit(".", 1)[-1] in _JOIN and not all(_literal(a, constants) is not None for a in args):
            continue  # joined with a directory: fine
        for arg in args:
            name = _literal(arg, constants)
            if name is None or (call.lineno, name) in seen or not _names_entry(name, entries, func):
                continue
            seen.add((call.lineno, name))
            issues.append(_relative_issue(func, name, call.lineno, contract))
    return issues


def _relative_issue(func: str, name: str, line: int, contract: Contract) -> Issue:
    base = "path" if contract.takes_path else "os.path.dirname(os.path.abspath(__file__))"
    fix = base if name.strip() in (".", "./") else f"os.path.join({base}, {name!r})"
    found = (f"a bare relative name: this profile assumes the grader runs in {contract.cwd!r}; "
             f"{_CWD_EFFECT.get(contract.cwd, _CWD_EFFECT['unknown'])}")
    return Issue("relative_path", "model.py", f"{func}({name!r}) line {line}", f"a path built from the submission folder, "
                 f"e.g. {fix}", found, severity="error" if contract.cwd == "program" else "warning")


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """NAME = 'literal' assignments whose name is never bound to anything else (MODEL_PATH = 'weights.keras')."""
    values: dict[str, set] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    value = node.value.value if isinstance(node.value, ast.Constant) else object()
                    values.setdefault(target.id, set()).add(value if isinstance(value, str) else id(node))
    return {k: next(iter(v)) for k, v in values.items() if len(v) == 1 and isinstance(next(iter(v)), str)}


def _literal(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _names_entry(text: str, entries: set[str], func: str) -> bool:
    """True when `text` names a file or folder of the zip ('weights.keras', './model/', '*.h5'), or is '.' given to
    a directory listing."""
    name = text.strip()
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return text.strip() in (".", "./") and func.rsplit(".", 1)[-1] in _LISTING
    if any(ch in name for ch in "*?["):
        return any(fnmatch.fnmatch(entry, name) for entry in entries)
    if "." not in name and "/" not in name and func.rsplit(".", 1)[-1] not in _PATH_CALLS:
        return False
    return name in entries


def _zip_paths(names: list[str]) -> set[str]:
    """Every file and folder path inside the zip ('model/variables/x' gives 'model', 'model/variables' too)."""
    out = set()
    for name in names:
        parts = name.rstrip("/").split("/")
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _call_name(func: ast.AST) -> str:
    try:
        return ast.unparse(func)
    except Exception:  # noqa: BLE001 - a name for a message only
        return "call"


# --- model files: what the target Keras accepts -------------------------------------------------------------------

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class _Target:
    """The profile's Keras table, asked for at most once per check and only when the zip holds a model file."""

    def __init__(self, profile: Profile):
        self.profile, self._done, self.target, self.reason = profile, False, None, ""

    def get(self):
        if not self._done:
            self._done = True
            from toolkit.errors import CbtoolError
            from toolkit.runtime.keras_compat import target_keras

            try:
                self.target = target_keras(self.profile)
                self.reason = "" if self.target else "its runtime venv does not exist yet"
            except CbtoolError as exc:
                self.reason = str(exc)
        return self.target


def _model_file(name: str, data: bytes, profile: Profile, target: _Target, versions: dict) -> list[Issue]:
    from toolkit.runtime.keras_compat import saved_keras_config, saved_keras_version

    kind = "a Keras .keras archive (config.json, metadata.json)" if name.endswith(".keras") else "a Keras HDF5 file"
    try:
        config, saved = saved_keras_config(data, name), saved_keras_version(data, name)
    except (ValueError, ImportError) as exc:
        return [Issue("keras_unreadable", name, "", kind, str(exc))]
    if config is None:  # a weights-only .h5: nothing to deserialize
        return []
    versions[name] = saved
    issues = _foreign_classes(name, config, profile)
    runtime = target.get()
    if runtime is None:
        return issues + [_unverified(name, saved, profile, target.reason)]
    found = runtime.incompatibilities(config)
    if found:
        issues.append(_incompatible(name, saved, profile, runtime.version, found))
    return issues


def _incompatible(name: str, saved: str | None, profile: Profile, runtime: str, found: list) -> Issue:
    first = found[0]
    where = f" at {first.path}" if first.path else ""
    symbol = f"saved by Keras {saved or '(unknown)'}; {profile.name}'s Keras {runtime} rejects {first.describe()}{where}"
    kinds = Counter(i.describe() for i in found)
    listed = ", ".join(f"{what} x{n}" if n > 1 else what for what, n in list(kinds.items())[:6])
    more = ", ..." if len(kinds) > 6 else ""
    return Issue("keras_version", name, symbol, f"a model file Keras {runtime} loads (re-save it with Keras {runtime}, "
                 "or rebuild it for the profile: cbtool build-submission --from-keras MODEL)",
                 f"{len(found)} class(es)/argument(s) Keras {runtime} does not accept: {listed}{more}")


def _unverified(name: str, saved: str | None, profile: Profile, reason: str) -> Issue:
    return Issue("keras_unverified", name, f"saved by Keras {saved or '(unknown)'}", f"a model file {profile.name}'s "
                 f"Keras {profile.keras_version or profile.keras_major} loads", f"compatibility not verified: {reason}; "
                 f"`cbtool runtime create {profile.name}` lets check verify it", severity="warning")


def _foreign_classes(name: str, config: dict, profile: Profile) -> list[Issue]:
    """Classes from modules the grader cannot import (keras_cv layers)."""
    importable, issues = set(profile.importable), []
    where = "config.json" if name.endswith(".keras") else "model_config"
    for module, cls in sorted(_classes(config)):
        root = module.split(".")[0]
        if root in FLAGGED or (root not in KERAS_MODULE_PREFIXES and root not in importable):
            issues.append(Issue("keras_class", name, f"{where} class {cls}", f"classes from modules {profile.name} can "
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
