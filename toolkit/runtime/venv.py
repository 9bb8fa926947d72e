"""Pinned virtual environments, created once with pip and cached under the user's cache directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from toolkit.errors import RuntimeProfileError
from toolkit.fsutil import sha256_text

_COMPLETE = ".cbtool-complete"


def cache_dir() -> Path:
    """$CBTOOL_CACHE_DIR, else $XDG_CACHE_HOME/cbtool, else ~/.cache/cbtool (evaluated at call time)."""
    if os.environ.get("CBTOOL_CACHE_DIR"):
        return Path(os.environ["CBTOOL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cbtool"


def venv_dir(name: str, packages: list[str]) -> Path:
    """Where the venv with exactly `packages` lives: keyed by the pins alone, so profiles that pin the same packages
    (a user profile with another contract but the an2dl-2024 runtime) share one venv. `name` is for messages."""
    return cache_dir() / "runtimes" / f"env-{_key(packages)}"


def _key(packages: list[str]) -> str:
    return sha256_text("\n".join(sorted(packages)))[:10]


def _earlier_dir(name: str, packages: list[str]) -> Path:
    """Where cbtool 0.1 kept the same venv (named by profile): reused rather than reinstalled."""
    return cache_dir() / "runtimes" / f"{name}-{_key(packages)}"


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_venv(name: str, packages: list[str]) -> Path | None:
    """The interpreter of an already-built venv (this version's folder, else an earlier version's), or None."""
    for path in (venv_dir(name, packages), _earlier_dir(name, packages)):
        if (path / _COMPLETE).exists():
            return venv_python(path)
    return None


def ensure_venv(name: str, packages: list[str], log: Callable[[str], None] | None = None) -> Path:
    """Return the interpreter of the cached venv, creating it with pip first if needed."""
    found = find_venv(name, packages)
    if found is not None:
        return found
    path = venv_dir(name, packages)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path.parent / f".{path.name}.lock"):
        if (path / _COMPLETE).exists():
            return venv_python(path)
        _build(path, packages, log or (lambda _msg: None))
    return venv_python(path)


def _build(path: Path, packages: list[str], log: Callable[[str], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        log(f"creating runtime venv {path.name} ({', '.join(packages)}) ...")
        _run([sys.executable, "-m", "venv", str(tmp)], "create the venv", log)
        cmd = [str(venv_python(tmp)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off", *packages]
        _run(cmd, "install " + " ".join(packages), log)
        (tmp / _COMPLETE).write_text("\n".join(packages) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        log(f"runtime venv ready: {path}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# pip's lines worth showing while it works (the rest is noise: "Requirement already satisfied", hashes, wheels' URLs)
_PIP_PROGRESS = ("Collecting ", "Processing ", "Downloading ", "Installing collected packages", "Successfully installed")


def _run(cmd: list[str], what: str, log: Callable[[str], None]) -> None:
    """Run `cmd`, passing pip's progress lines to `log` as they come; a failure names the last lines it printed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        tail = (tail + [line])[-20:]
        if line.lstrip().startswith(_PIP_PROGRESS):
            log("  pip: " + line.strip()[:160])
    if proc.wait() != 0:
        last = " | ".join(tail[-3:])
        hint = " (is a package registry reachable?)" if any(
            "No matching distribution" in t or "connection" in t.lower() for t in tail) else ""
        raise RuntimeProfileError(f"pip could not {what}{hint}: {last}")


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
