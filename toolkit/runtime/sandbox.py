"""The one loader: run a submission zip the way the grader does, in a child process of the profile's runtime.

Every command that runs a submission (simulate, validate-preprocessing, predict) goes through `run_submission`. What the child gets, and why:
- the zip extracted into a fresh temp sandbox by `SubmissionZip` (absolute paths, `..` entries and symlinks refused:
  zip-slip; the unpacked size capped by the profile and the free disk: zip bombs);
- the profile's interpreter (a pinned venv from `ensure_venv`; `sys.executable` for `local`), started with `-I`
  (no PYTHON* variables, no user site-packages, no script directory on sys.path);
- the working directory the caller asks for: the submission folder (where the AN2DL 2024 grader ran, so a
  `model.py` opening 'weights.keras' by a bare name works there) or a separate program folder (where a stock
  Codabench worker runs its ingestion program, so such a model.py fails); the child records every relative path
  the submission opens or lists (an audit hook), so a caller can say which files depend on the working directory;
- the contract itself in the request file: the class to instantiate, its constructor arguments, the methods to
  call in order (`fit(X, y)` with the given fit data, then `predict` on every input), numpy or tf.Tensor input;
- an environment of only PYTHONUNBUFFERED=1 plus PATH and a HOME inside the sandbox (so Keras' ~/.keras is the
  sandbox's); cbtool is made unimportable in the child even when the interpreter has it installed;
- no network when `unshare -n` works on this machine (Linux); otherwise the outcome says it was not blocked;
- one wall-clock kill limit over the whole child run (simulate stretches it over its extra probes and judges the
  grader's own pass afterwards), and resident memory (VmRSS of the whole process tree from /proc) watched every
  0.1 s: the child is killed past either budget.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.results import Failure
from toolkit.runtime.profiles import Profile

CHILD_SCRIPT = Path(__file__).with_name("_child.py")
BLOCKED_MODULES = ("toolkit", "cbtool")
POLL_S = 0.1
STATUS_POLL_S = 0.5
TAIL_CHARS = 4000
WORKING_DIRS = ("submission", "program")
FAILURE_KINDS = ("import_error", "load_error", "fit_error", "predict_error", "timeout", "killed", "exit")


@dataclass
class RunOutcome:
    """What a run produced. `outputs`: what predict returned per input name (as numpy). `captured`: the tensors
    that reached the network's first layer per input name, concatenated; `captured_calls` keeps them per call."""

    status: str
    failure: Failure | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    captured: dict[str, np.ndarray] = field(default_factory=dict)
    captured_calls: dict[str, list[np.ndarray]] = field(default_factory=dict)
    captured_by_net: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)  # several networks: each one's calls
    capture_target: str | None = None
    timing: dict = field(default_factory=lambda: {"import_s": None, "load_s": None, "fit_s": None, "predict_s": {}})
    peak_memory_mb: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    python: str = ""
    network_blocked: bool = False
    wall_s: float = 0.0
    cwd: str = "program"
    relative_paths: list[str] = field(default_factory=list)  # paths the submission opened/listed relative to its cwd
    versions: dict[str, str] = field(default_factory=dict)  # python and the libraries the child imported, as it saw them
    skipped: dict[str, str] = field(default_factory=dict)  # extra input (see `overrides`) -> why it has no output

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_submission(
    zip_path: str | os.PathLike,
    profile: Profile,
    inputs: dict[str, np.ndarray],
    *,
    time_limit_s: float | None = None,
    memory_limit_mb: float | None = None,
    capture_input: bool = False,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    fit_data: tuple[np.ndarray, np.ndarray] | None = None,
    cwd: str = "program",
    overrides: dict[str, dict[str, object]] | None = None,
) -> RunOutcome:
    """Extract `zip_path`, import its model.py in a child of `profile`'s runtime, call predict on each input.

    `progress(k, n)`: k=0 once the child starts predicting, then k more of the n inputs predicted (read from the
    child's status file while it runs, so a long corruption suite shows how far it is). `fit_data` = (X, y) for a
    contract whose grader calls fit before predict. `cwd`: "submission" or "program", the child's working directory.
    `overrides`: input name -> model.py module globals set around that input's predict (an extra the grader never
    makes, e.g. another TTA mode): its failure lands in `outcome.skipped`, not in `outcome.failure`.
    """
    log = log or (lambda _msg: None)
    python = runtime_python(profile, log)
    time_limit = float(time_limit_s if time_limit_s is not None else profile.time_limit_s)
    memory_limit = float(memory_limit_mb if memory_limit_mb is not None else profile.memory_limit_mb)
    root = Path(tempfile.mkdtemp(prefix="cbtool-sandbox-"))
    try:
        submission, program, io_dir = root / "submission", root / "program", root / "io"
        for folder in (submission, program, io_dir, root / "home"):
            folder.mkdir()
        input_layer = _extract(zip_path, submission, profile)
        shutil.copy2(CHILD_SCRIPT, program / "_child.py")
        request = _write_request(root, profile, inputs, capture_input, fit_data, input_layer, overrides or {})
        blocked = "network blocked" if network_block_prefix() else "network NOT blocked (unshare -n unavailable)"
        log(f"running {Path(zip_path).name} in {profile.name} ({python}; {blocked})")
        if cwd not in WORKING_DIRS:
            raise ValueError(f"cwd must be one of {WORKING_DIRS}, found {cwd!r}")
        workdir = submission if cwd == "submission" else program
        run = _run_child(python, root, request, time_limit, memory_limit, _StatusWatch(root, len(inputs), progress), workdir)
        outcome = _outcome(run, root, inputs, python, time_limit, memory_limit)
        outcome.cwd = cwd
        return outcome
    finally:
        shutil.rmtree(root, ignore_errors=True)


def runtime_python(profile: Profile, log: Callable[[str], None] | None = None) -> str:
    """The interpreter of `profile`: the current one for `local`, else its cached pinned venv (built if missing)."""
    if profile.is_local:
        return sys.executable
    from toolkit.runtime.venv import ensure_venv

    return str(ensure_venv(profile.name, list(profile.packages), log))


# --- extraction ---------------------------------------------------------------------------------------------------


def _extract(zip_path: str | os.PathLike, dest: Path, profile: Profile) -> str | None:
    """Extract the submission; return the network's input layer its manifest names (None for zips cbtool did not build)."""
    from toolkit.submission_zip import SubmissionZip

    with SubmissionZip(zip_path) as sub:
        sub.extract(dest, profile.unpacked_limit_mb)
        return (sub.manifest.get("model") or {}).get("input_layer")


# --- the child ----------------------------------------------------------------------------------------------------


def _write_request(root: Path, profile: Profile, inputs: dict[str, np.ndarray], capture: bool,
                   fit_data: tuple[np.ndarray, np.ndarray] | None = None, input_layer: str | None = None,
                   overrides: dict[str, dict[str, object]] | None = None) -> Path:
    io_dir = root / "io"
    items, written = [], {}  # id(array) -> file: an array fed several times (once per TTA mode) is written once
    for index, (name, array) in enumerate(inputs.items()):
        if id(array) not in written:
            written[id(array)] = str(io_dir / f"in_{index:03d}.npy")
            np.save(written[id(array)], np.asarray(array), allow_pickle=False)
        items.append({"name": name, "file": written[id(array)],
                      **({"globals": dict(overrides[name])} if name in (overrides or {}) else {})})
    fit = None
    if fit_data is not None and "fit" in profile.contract.methods:
        np.save(io_dir / "fit_x.npy", np.asarray(fit_data[0]), allow_pickle=False)
        np.save(io_dir / "fit_y.npy", np.asarray(fit_data[1]), allow_pickle=False)
        fit = {"x": str(io_dir / "fit_x.npy"), "y": str(io_dir / "fit_y.npy")}
    request = {
        "submission_dir": str(root / "submission"),
        "contract": profile.contract.to_dict(),
        "inputs": items,
        "fit": fit,
        "output_dir": str(io_dir),
        "status_file": str(io_dir / "status.json"),
        "capture": bool(capture),
        "capture_layer": input_layer,
        "block_modules": list(BLOCKED_MODULES),
    }
    path = io_dir / "request.json"
    path.write_text(json.dumps(request))
    return path


@dataclass
class _ChildRun:
    returncode: int
    killed_for: str | None  # "timeout" | "memory" | None
    peak_mb: float | None
    wall_s: float
    network_blocked: bool
    stdout: str
    stderr: str


def _run_child(python: str, root: Path, request: Path, time_limit: float, memory_limit: float,
               status: _StatusWatch | None = None, workdir: Path | None = None) -> _ChildRun:
    prefix = network_block_prefix()
    cmd = [*prefix, python, "-I", str(root / "program" / "_child.py"), str(request)]
    env = {"PYTHONUNBUFFERED": "1", "PATH": os.defpath, "HOME": str(root / "home")}
    out_path, err_path = root / "stdout.txt", root / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=workdir or root / "program", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        killed_for, peak = _watch(proc, started, time_limit, memory_limit, status)
        wall = time.monotonic() - started
        if status is not None:
            status.poll(force=True)
    return _ChildRun(proc.returncode, killed_for, peak, wall, bool(prefix),
                     _tail(out_path), _tail(err_path))


class _StatusWatch:
    """Reports the child's predicted inputs to a progress callback, reading its status file at most every STATUS_POLL_S."""

    def __init__(self, root: Path, total: int, progress: Callable[[int, int], None] | None):
        self.path, self.total, self.progress = root / "io" / "status.json", total, progress
        self.started, self.reported, self.last = False, 0, 0.0

    def poll(self, force: bool = False) -> None:
        if self.progress is None or (not force and time.monotonic() - self.last < STATUS_POLL_S):
            return
        self.last = time.monotonic()
        status = _read_status(self.path)
        if not self.started and status.get("phase") in ("predict", "done"):
            self.started = True
            self.progress(0, self.total)
        done = len(status.get("outputs") or {})
        if self.started and done > self.reported:
            self.progress(done - self.reported, self.total)
            self.reported = done


def _watch(proc: subprocess.Popen, started: float, time_limit: float, memory_limit: float,
           status: _StatusWatch | None = None) -> tuple[str | None, float | None]:
    peak: float | None = None
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None, peak
        except subprocess.TimeoutExpired:
            pass
        if status is not None:
            status.poll()
        rss = tree_rss_mb(proc.pid)
        if rss is not None:
            peak = max(peak or 0.0, rss)
        reason = "timeout" if time.monotonic() - started > time_limit else ("memory" if rss is not None and rss > memory_limit else None)
        if reason:
            _kill(proc)
            return reason, peak


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) of `pid` and all its descendants in MB, from /proc; None where /proc is missing."""
    proc = Path("/proc")
    if not (proc / str(pid)).exists():
        return None
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _vmrss_kb(current)
        todo.extend(children.get(current, []))
    return total / 1024.0


def _vmrss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@functools.lru_cache(maxsize=1)
def network_block_prefix() -> tuple[str, ...]:
    """`unshare -n` (or `-rn` without root) when it works here, so the child has no network; else ()."""
    exe = shutil.which("unshare")
    if not exe or not sys.platform.startswith("linux"):
        return ()
    for flags in (("-n",), ("-r", "-n")):
        try:
            if subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0:
                return (exe, *flags)
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def _tail(path: Path) -> str:
    data = path.read_bytes() if path.exists() else b""
    return data[-TAIL_CHARS:].decode("utf-8", "replace")


# --- reading the result -------------------------------------------------------------------------------------------


def _outcome(run: _ChildRun, root: Path, inputs: dict, python: str, time_limit: float, memory_limit: float) -> RunOutcome:
    status = _read_status(root / "io" / "status.json")
    timing = status.get("timing") or {}
    outcome = RunOutcome(
        status="ok",
        timing={"import_s": timing.get("import_s"), "load_s": timing.get("load_s"), "fit_s": timing.get("fit_s"),
                "predict_s": dict(timing.get("predict_s") or {})},
        peak_memory_mb=run.peak_mb,
        stdout_tail=run.stdout,
        stderr_tail=run.stderr,
        python=python,
        network_blocked=run.network_blocked,
        wall_s=run.wall_s,
        capture_target=status.get("capture"),
        relative_paths=list(status.get("relative_paths") or []),
        versions=dict(status.get("versions") or {}),
        skipped=dict(status.get("skipped") or {}),
    )
    outcome.outputs = {name: np.load(path, allow_pickle=False) for name, path in (status.get("outputs") or {}).items()}
    for name, paths in (status.get("captured") or {}).items():
        calls = [np.load(p, allow_pickle=False) for p in paths if os.path.exists(p)]
        outcome.captured_calls[name] = calls
        if calls and len({c.shape[1:] for c in calls}) == 1:
            outcome.captured[name] = np.concatenate(calls, axis=0)
    for name, nets in (status.get("captured_nets") or {}).items():
        outcome.captured_by_net[name] = [[np.load(p, allow_pickle=False) for p in paths if os.path.exists(p)] for paths in nets]
    outcome.failure = _failure(run, status, time_limit, memory_limit)
    if outcome.failure is not None:
        outcome.status = "failed"
    return outcome


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _failure(run: _ChildRun, status: dict, time_limit: float, memory_limit: float) -> Failure | None:
    phase = status.get("phase") or "start"
    phase = "import" if phase == "start" else phase
    tail = run.stderr
    if run.killed_for == "timeout":
        return Failure("timeout", phase, f"import + load + predict passed the {time_limit:g} s wall-clock limit during {phase}; killed", tail)
    if run.killed_for == "memory":
        return Failure("killed", phase, f"resident memory {run.peak_mb:.0f} MB passed the {memory_limit:g} MB budget during {phase}; killed", tail)
    reported = status.get("failure")
    if reported:
        return Failure(reported["kind"], reported["phase"], reported["message"], tail)
    if run.returncode < 0:
        name = signal.Signals(-run.returncode).name if -run.returncode in signal.valid_signals() else str(-run.returncode)
        return Failure("killed", phase, f"the child was killed by {name} during {phase} (out of memory?)", tail)
    if not status.get("done"):
        return Failure("exit", phase, f"the child exited with status {run.returncode} during {phase} before predict returned "
                       "(os._exit() in the submission, or a crash in native code)", tail)
    return None
