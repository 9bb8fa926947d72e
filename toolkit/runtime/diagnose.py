"""Why a submission failed, in the user's terms: the explanations simulate adds to a raw failure message.

- a file of the submission opened by a bare relative path (the grader's working directory decides whether it works);
- a `.keras`/`.h5` the runtime's Keras cannot load: which Keras saved it, which the runtime has, the key it rejects;
- the contract's class missing while another built-in profile's contract fits the zip.
Each function returns a text to put first, or None. TensorFlow-free.
"""

from __future__ import annotations

import ast
import re

from toolkit.artifacts import SUBMISSION_FILES
from toolkit.runtime.profiles import BUILTIN, Profile
from toolkit.submission_zip import SubmissionZip

# How "file not found" reads in open()/np.load, Keras 3 (`File not found: filepath=...`), Keras 2 / TF 2.15 (`No file or
# directory found at ...`), h5py (`unable to open file`, `errno = 2`) and TensorFlow (`SavedModel file does not exist
# at: ...`, NotFoundError).
NOT_FOUND = ("no such file or directory", "file not found", "no file or directory found", "does not exist", "unable to open",
             "errno = 2", "notfounderror", "filenotfounderror")  # fmt: skip
_OURS = {SUBMISSION_FILES.MODEL_PY, SUBMISSION_FILES.MANIFEST, SUBMISSION_FILES.METADATA}
# Where Keras names the constructor argument or class it rejects, in its 3.x and 2.x wordings.
_REJECTED = (
    re.compile(r"unexpected keyword argument '([^']+)'"),
    re.compile(r"Unrecognized keyword arguments?(?: passed to \w+)?: \[?'?([^'\]\s,]+)"),
    re.compile(r"Could not (?:locate|deserialize) class '([^']+)'"),
    re.compile(r"Unknown (?:layer|object|initializer|activation): '?([\w.]+)'?"),
)


def portable_fix(name: str, profile: Profile) -> str:
    """How model.py should open a file of its own submission, whatever the grader's working directory."""
    if profile.contract.takes_path:
        return f"os.path.join(path, {name!r}) with the `path` your constructor receives"
    return f"os.path.join(os.path.dirname(os.path.abspath(__file__)), {name!r})"


def relative_members(paths: list[str], members: set[str]) -> list[str]:
    """The relative paths the submission opened or listed that name its own files (or list its folder: '.')."""
    own = set(members) - _OURS
    out = []
    for path in paths:
        first = path.replace("\\", "/").lstrip("./").split("/")[0] if path not in (".", "./", "") else "."
        if (first in own or first == ".") and path not in out:
            out.append(path)
    return out


def relative_path_hint(failure: dict, members: set[str], profile: Profile, opened: list[str] = ()) -> str | None:
    """When model.py opened (or listed) its own files by a bare relative path and that failed, say why and the fix."""
    if failure.get("kind") not in ("import_error", "load_error", "fit_error", "predict_error"):
        return None
    text = str(failure.get("message", ""))  # the exception itself, not the traceback's source lines
    own = set(members) - _OURS
    # a bare or ./-relative mention; an absolute path (preceded by '/') was resolved and is another problem
    bare = sorted(m for m in own if re.search(rf"(?<![\w/\\.-])(?:\./)?{re.escape(m)}(?![\w-]|\.\w)", text))
    named = bare[0] if bare and any(marker in text.lower() for marker in NOT_FOUND) else None
    listed = "." in relative_members(list(opened), members)
    if named is None and not listed:
        return None
    what = f"opened {named!r} by a relative path" if named else "listed its working directory ('.') to find its files"
    subject = named or "a file of the submission"
    return (
        f"model.py {what}, which resolves against the working directory. simulate ran it with its working directory "
        f"outside the submission folder (profile {profile.name} assumes the grader's is '{profile.contract.cwd}'), where "
        f"{subject!s} is not. Resolve files from model.py's own folder and it works under any grader: "
        f"{portable_fix(named or 'weights.keras', profile)}."
    )


def cwd_warning(opened: list[str], members: set[str], profile: Profile) -> str | None:
    """A run that passed only because the working directory was the submission folder: name the files and the fix."""
    relative = relative_members(opened, members)
    if not relative:
        return None
    names = ", ".join(repr(p) for p in relative[:5])
    return (f"model.py opened {names} relative to the working directory: it works because profile {profile.name} assumes "
            "the grader runs inside the submission folder, and fails under a grader that runs elsewhere (a stock Codabench "
            f"worker runs its ingestion program from its own folder). Portable: {portable_fix(relative[0].lstrip('./') or 'FILE', profile)}.")


def keras_load_hint(failure: dict, sub: SubmissionZip, profile: Profile) -> str | None:
    """For a load failure of a saved Keras model: which Keras saved it, which the runtime has, what it rejected."""
    if failure.get("kind") != "load_error":
        return None
    saved = saved_keras_versions(sub)
    if not saved:
        return None
    message = str(failure.get("message", ""))
    rejected = next((m.group(1) for pattern in _REJECTED for m in [pattern.search(message)] if m), None)
    files = ", ".join(f"{name} was saved by Keras {version}" for name, version in saved.items())
    runtime = f"the {profile.name} runtime has Keras {profile.keras_version or profile.keras_major}"
    reason = f" and rejects {rejected!r}" if rejected else ""
    return (f"{files}; {runtime}{reason}. Save with the runtime's Keras, or let cbtool rebuild it portably: "
            "cbtool build-submission --from-keras MODEL --preprocess SPEC. The raw error follows.")


def saved_keras_versions(sub: SubmissionZip) -> dict[str, str]:
    """{entry: the Keras version that saved it} for every .keras and .h5 file in the zip."""
    from toolkit.runtime.keras_compat import saved_keras_version

    out = {}
    for name in sub.names:
        if not name.endswith((".keras", ".h5", ".hdf5")):
            continue
        try:
            version = saved_keras_version(sub.read(name, max_bytes=sub.unpacked_bytes), name)
        except (ValueError, OSError):
            continue
        if version:
            out[name] = version
    return out


def other_profile_hint(failure: dict, sub: SubmissionZip, profile: Profile) -> str | None:
    """The contract's class is missing: name a built-in profile whose contract this zip fits (class, `metadata`)."""
    if failure.get("kind") != "load_error" or "defines no class" not in str(failure.get("message", "")):
        return None
    try:
        classes = {n.name for n in ast.parse(sub.model_py or "").body if isinstance(n, ast.ClassDef)}
    except SyntaxError:
        return None
    has_metadata = sub.has(SUBMISSION_FILES.METADATA)
    for other in BUILTIN.values():
        contract = other.contract
        if other.name != profile.name and contract.class_name in classes and (not contract.metadata or has_metadata):
            return (f"this zip fits profile {other.name} ({contract.describe()}): pass --profile {other.name} if that is "
                    "the grader you are submitting to.")
    return None
