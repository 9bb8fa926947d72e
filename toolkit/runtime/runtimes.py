"""Creating and listing the runtime venvs of profiles (what `cbtool runtime create/list` do)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

from toolkit.errors import RuntimeProfileError
from toolkit.runtime.profiles import BUILTIN, get_profile, load_user_profiles, local_profile

_REGISTRY_HINTS = ("no matching distribution", "could not find a version", "connection", "network is unreachable",
                   "temporary failure in name resolution", "max retries exceeded", "proxyerror")


def create_runtime(name: str, profiles_file=None, log: Callable[[str], None] | None = None) -> dict:
    """Build (or reuse) the venv of profile `name`; return {profile, python, reused, seconds, packages}."""
    from toolkit.runtime.venv import ensure_venv, find_venv

    log = log or (lambda _msg: None)
    profile = get_profile(name, profiles_file)
    if profile.is_local:
        return {"profile": name, "python": sys.executable, "reused": True, "seconds": 0.0, "packages": []}
    existing = find_venv(profile.name, list(profile.packages))
    if existing:
        return {"profile": name, "python": str(existing), "reused": True, "seconds": 0.0, "packages": list(profile.packages)}
    started = time.monotonic()
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(stop, started, log), daemon=True)
    ticker.start()
    try:
        python = ensure_venv(profile.name, list(profile.packages), log)
    except RuntimeProfileError as exc:
        text = str(exc).lower()
        if any(h in text for h in _REGISTRY_HINTS):
            index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
            raise RuntimeProfileError(f"could not create runtime {name!r}: the package registry ({index}) cannot be reached "
                                      f"or lacks {', '.join(profile.packages)}. Connect to the network (or set PIP_INDEX_URL "
                                      f"to a mirror) and run `cbtool runtime create {name}` again. pip said: {exc}") from exc
        raise
    finally:
        stop.set()
    return {"profile": name, "python": str(python), "reused": False, "seconds": time.monotonic() - started,
            "packages": list(profile.packages)}


def _tick(stop: threading.Event, started: float, log: Callable[[str], None]) -> None:
    while not stop.wait(15.0):
        log(f"  ... pip still installing ({time.monotonic() - started:.0f} s)")


def list_runtimes(profiles_file=None) -> list[dict]:
    """Every built-in and user profile with its venv status (ready / missing)."""
    from toolkit.runtime.venv import find_venv, venv_dir

    profiles = [local_profile(), *BUILTIN.values(), *(load_user_profiles(profiles_file).values() if profiles_file else [])]
    rows = []
    for profile in profiles:
        if profile.is_local:
            python, status, path = sys.executable, "ready", None
        else:
            found = find_venv(profile.name, list(profile.packages))
            python, status = (str(found), "ready") if found else (None, "not created")
            path = str(found.parent.parent if found else venv_dir(profile.name, list(profile.packages)))
        rows.append({"profile": profile.name, "contract": profile.contract.key, "status": status, "python": python,
                     "venv": path, "packages": list(profile.packages), "description": profile.description})
    return rows
