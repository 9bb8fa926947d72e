"""`build-submission --plan N`: the grader's total time for N images, estimated before building.

total = import (TensorFlow) + for each member: load (rebuild + set weights) and its first-call overhead
        + N x sum over members of [views x (forward per image + view copy) + preprocessing per image]

Each member's costs come from a small benchmark of its network (family, variant, input size, batch size; random
weights: speed does not depend on values) run in a clean child of the profile's pinned runtime on this machine,
the same interpreter `simulate` runs the zip in (the runtime's TensorFlow can be faster or slower than the host's).
The child executes the very source blocks model.py embeds (toolkit/preprocessing.py, toolkit/tta.py, the family's
architecture file), so it times what the grader's predict calls. Results are cached under the cbtool cache
(plan/*.json) keyed by the member's network, batch size, runtime, framework versions and machine: a second plan
is instant. The grader's machine may differ from this one; every plan says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toolkit.errors import RuntimeProfileError, SubmissionError
from toolkit.fsutil import atomic_path, sha256_text
from toolkit.results import Result, images_within
from toolkit.runtime.profiles import Profile
from toolkit.tta import TTA_VIEWS

MACHINE_NOTE = ("measured on this machine; the grader's machine may differ (slower or faster CPU, other core count), "
                "so keep a margin")
ONNX_NOTE = "onnx members are timed as their Keras network (onnxruntime is usually faster: an upper bound)"
PLAN_VERSION = 1  # bump when what a cache entry measures changes
MIN_CALLS, MAX_CALLS, TARGET_S = 3, 10, 3.0  # timed forward calls per member: at least 3, up to 10 or ~3 s


@dataclass(frozen=True)
class PlanMember:
    """One ensemble member as the planner sees it: its network (`spec`, model_spec.json), input, TTA and format."""

    variant: str
    spec: dict
    input_size: int
    resize: str = "bilinear"
    tta: str = "none"
    fmt: str = "portable"


@dataclass
class MemberTime:
    """A member's measured costs (seconds) and its per-image cost with its TTA views."""

    variant: str
    input_size: int
    fmt: str
    tta: str
    views: int
    forward_s: float  # one view of one image through the network, at the batch size
    view_s: float  # making one TTA view of one image (numpy copy)
    preprocess_s: float  # preprocessing one image
    load_s: float  # rebuilding the network and setting its weights (Model() construction)
    first_call_s: float  # the first batch's extra cost over a steady one
    s_per_image: float
    cached: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class TimePlan(Result):
    """The estimate of the grader's total time for `n_images`, against the profile's time limit."""

    n_images: int
    profile: str
    batch_size: int
    time_limit_s: float
    runtime: dict  # python, packages, versions the benchmark ran with
    machine: dict
    import_s: float
    fixed_s: float  # import + every member's load and first call
    s_per_image: float  # every member, TTA views included
    predict_s: float
    total_s: float
    within_limit: bool
    images_within_time_limit: int
    members: list[MemberTime]
    measured: int  # members benchmarked by this call (0: all from the cache)
    note: str = MACHINE_NOTE


def plan_submission(members: list[PlanMember], n_images: int, profile: Profile, batch_size: int,
                    log: Callable[[str], None] | None = None, *, cache_dir: Path | None = None,
                    python: str | None = None) -> TimePlan:
    """Estimate the grader's time for `n_images` with these members; benchmark the members not cached yet.

    `python`: the interpreter to time in (default: the profile's pinned runtime, as `simulate` uses)."""
    log = log or (lambda _msg: None)
    if not members:
        raise SubmissionError("--plan: no members to plan (pass at least one run or export dir)")
    if int(n_images) < 1 or int(batch_size) < 1:
        raise SubmissionError(f"--plan: expected a positive image count and batch size, found {n_images} and {batch_size}")
    for member in members:
        _validate(member)
    runtime = _runtime(profile, python, log)
    machine = machine_info()
    folder = Path(cache_dir) if cache_dir is not None else _default_cache()
    keys = [_key(m, batch_size, runtime, machine) for m in members]
    entries = {k: _read_cache(folder / f"{k}.json") for k in set(keys)}
    missing = [m for m, k in zip(members, keys) if entries[k] is None]
    if missing:
        todo = {k: m for m, k in zip(members, keys) if entries[k] is None}
        log(f"timing {len(todo)} member network(s) in {profile.name}'s runtime ({runtime['python']}) on this machine")
        measured = _measure(list(todo.values()), batch_size, _image_shape(profile), runtime["python"])
        for (key, _member), entry in zip(todo.items(), measured):
            entry["versions"] = {**runtime.get("versions", {}), **entry.get("versions", {})}
            _write_cache(folder / f"{key}.json", entry)
            entries[key] = {**entry, "_fresh": True}
    times = [_member_time(m, entries[k]) for m, k in zip(members, keys)]
    return _plan(times, entries[keys[0]], int(n_images), profile, int(batch_size), runtime, machine,
                 measured=len({k for k in keys if entries[k].get("_fresh")}))


def _plan(times: list[MemberTime], first: dict, n: int, profile: Profile, batch_size: int, runtime: dict,
          machine: dict, measured: int) -> TimePlan:
    import_s = float(first["import_s"])
    fixed = import_s + sum(t.load_s + t.first_call_s for t in times)
    per_image = sum(t.s_per_image for t in times)
    total = fixed + n * per_image
    limit = float(profile.time_limit_s)
    fits = images_within(limit, fixed, per_image)
    runtime = {**runtime, "versions": first.get("versions", {})}
    return TimePlan(n_images=n, profile=profile.name, batch_size=batch_size, time_limit_s=limit, runtime=runtime,
                    machine=machine, import_s=import_s, fixed_s=fixed, s_per_image=per_image, predict_s=n * per_image,
                    total_s=total, within_limit=total <= limit, images_within_time_limit=fits, members=times,
                    measured=measured)


def _member_time(member: PlanMember, entry: dict) -> MemberTime:
    views = TTA_VIEWS[member.tta]
    forward, view, pre = float(entry["forward_s"]), float(entry["view_s"]), float(entry["preprocess_s"])
    return MemberTime(variant=member.variant, input_size=int(member.input_size), fmt=member.fmt, tta=member.tta,
                      views=views, forward_s=forward, view_s=view, preprocess_s=pre, load_s=float(entry["load_s"]),
                      first_call_s=float(entry["first_call_s"]), s_per_image=views * (forward + view) + pre,
                      cached=not entry.get("_fresh"), notes=[ONNX_NOTE] if member.fmt == "onnx" else [])


def describe(plan: TimePlan) -> str:
    """The human lines: one per member, the total against the limit, and the machine caveat."""
    lines = [f"plan for {plan.n_images:,} images (profile {plan.profile}, batch {plan.batch_size}):"]
    for t in plan.members:
        src = "cached" if t.cached else "measured now"
        lines.append(f"  {t.variant} @ {t.input_size} px, {t.fmt}, TTA {t.tta} ({t.views} view{'s' * (t.views > 1)}): "
                     f"{t.s_per_image:.4f} s/image, load {t.load_s:.1f} s ({src})" + "".join(f"; {n}" for n in t.notes))
    verdict = "within" if plan.within_limit else "OVER"
    lines.append(f"  estimate {plan.total_s:,.0f} s = {plan.fixed_s:.1f} s import + load + {plan.n_images:,} x "
                 f"{plan.s_per_image:.4f} s/image: {verdict} the {plan.time_limit_s:g} s this profile ({plan.profile}) "
                 f"assumes; about {plan.images_within_time_limit:,} images fit")
    lines.append(f"  {MACHINE_NOTE}")
    return "\n".join(lines)


def over_limit_message(plan: TimePlan) -> str:
    """The one-line refusal when the estimate exceeds the profile's time limit (build-submission without --force)."""
    views = sum(t.views for t in plan.members)
    helps = []
    if any(t.views > 1 for t in plan.members):
        helps.append("a lighter --tta (flip: 2 views, none: 1)")
    if len(plan.members) > 1:
        helps.append("fewer members")
    helps += ["a smaller variant or --input-size", "--force to build anyway"]
    return (f"--plan: the grader would need about {plan.total_s:,.0f} s for {plan.n_images:,} images ({views} forward "
            f"pass(es) per image over {len(plan.members)} member(s)), over the {plan.time_limit_s:g} s this profile "
            f"({plan.profile}) assumes; about {plan.images_within_time_limit:,} images fit. Try {', '.join(helps)} "
            f"({MACHINE_NOTE})")


def member_from_dir(source: str | os.PathLike, tta: str, fmt: str) -> PlanMember:
    """A run or export dir as a planned member: its model_spec.json and preprocessing.json."""
    from toolkit.artifacts import ExportDir

    folder = ExportDir(source)
    spec = folder.read_json(folder.model_spec, SubmissionError)
    prep = folder.read_json(folder.preprocessing, SubmissionError)
    size = int(prep.get("input_size") or spec.get("input_size") or 96)
    return PlanMember(variant=str(spec.get("variant")), spec=spec, input_size=size,
                      resize=str(prep.get("resize", "bilinear")), tta=tta, fmt=fmt)


# --- the benchmark child ----------------------------------------------------------------------------------------


def _validate(member: PlanMember) -> None:
    from toolkit.artifacts import FORMATS
    from toolkit.families import family_of

    if member.tta not in TTA_VIEWS:
        raise SubmissionError(f"--plan: member {member.variant}: TTA must be one of {', '.join(TTA_VIEWS)}, found {member.tta!r}")
    if member.fmt not in FORMATS:
        raise SubmissionError(f"--plan: member {member.variant}: format must be one of {', '.join(FORMATS)}, found {member.fmt!r}")
    try:
        family_of(member.variant)
    except Exception as exc:
        raise SubmissionError(f"--plan: member {member.variant!r}: no model family builds it ({exc})") from None


def _sources(member: PlanMember) -> str:
    """The toolkit files model.py embeds for this member (portable), concatenated: what its predict runs."""
    from toolkit.submission.render import TOOLKIT_DIR, embedded_sources

    return "\n\n".join((TOOLKIT_DIR / name).read_text(encoding="utf-8") for name in embedded_sources(member.spec, "portable"))


def _measure(members: list[PlanMember], batch_size: int, image_shape: tuple[int, int, int], python: str) -> list[dict]:
    """Run the benchmark child once for `members`; return one measurement dict per member."""
    request = {"batch_size": batch_size, "image_shape": list(image_shape), "min_calls": MIN_CALLS, "max_calls": MAX_CALLS,
               "target_s": TARGET_S,
               "members": [{"spec": m.spec, "input_size": int(m.input_size), "resize": m.resize, "source": _sources(m)}
                           for m in members]}
    with tempfile.TemporaryDirectory(prefix="cbtool-plan-") as tmp:
        env = {"PYTHONUNBUFFERED": "1", "PATH": os.defpath, "HOME": tmp, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:  # the sandbox's environment (a clean child, the same thread defaults), so the speeds compare
            proc = subprocess.run([python, "-I", "-c", _CHILD], input=json.dumps(request), capture_output=True, text=True,
                                  env=env, cwd=tmp, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeProfileError(f"--plan: the benchmark child ({python}) did not run: {exc}") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CBTOOL_PLAN ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise RuntimeProfileError(f"--plan: the benchmark child ({python}) failed (exit {proc.returncode}): {tail}")
    out = json.loads(lines[-1][len("CBTOOL_PLAN "):])
    return [{**m, "import_s": out["import_s"], "versions": out["versions"]} for m in out["members"]]


# Runs with `python -I` in the runtime: numpy + TensorFlow only; the request on stdin, one CBTOOL_PLAN line out.
_CHILD = r'''
import json, os, statistics, sys, tempfile, time
req = json.loads(sys.stdin.read())
t0 = time.perf_counter()
import numpy as np
import tensorflow as tf
from tensorflow import keras
import_s = time.perf_counter() - t0
bs, shape = req["batch_size"], tuple(req["image_shape"])
raw = np.random.default_rng(0).integers(0, 256, (bs, *shape), dtype=np.uint8)
def forward(net, x):
    y = net(x, training=False)
    return np.asarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.float64)
def clock(fn, *args):
    t = time.perf_counter(); fn(*args); return time.perf_counter() - t
out = []
for m in req["members"]:
    ns = {"__name__": "cbtool_plan_member"}
    exec(compile(m["source"], "<model.py blocks>", "exec"), ns)
    path = os.path.join(tempfile.mkdtemp(), "weights.npz")
    ns["save_weights_npz"](ns["build_model"](m["spec"]), path)
    t = time.perf_counter()
    net = ns["build_model"](m["spec"]); ns["load_weights_npz"](net, path)
    load_s = time.perf_counter() - t
    size, resize = m["input_size"], m["resize"]
    t = time.perf_counter()
    x = ns["preprocess"](raw, size, resize); forward(net, x)
    first = time.perf_counter() - t
    pre = [clock(ns["preprocess"], raw, size, resize) for _ in range(3)]
    views = [clock(ns["tta_views"], x, "d4") / 8 for _ in range(3)]
    calls, spent = [], 0.0
    while len(calls) < req["min_calls"] or (len(calls) < req["max_calls"] and spent < req["target_s"]):
        calls.append(clock(forward, net, x)); spent += calls[-1]
    steady = statistics.median(calls)
    out.append({"forward_s": steady / bs, "view_s": statistics.median(views) / bs,
                "preprocess_s": statistics.median(pre) / bs, "load_s": load_s,
                "first_call_s": max(0.0, first - steady - statistics.median(pre)), "calls": len(calls)})
versions = {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}
print("CBTOOL_PLAN " + json.dumps({"import_s": import_s, "versions": versions, "members": out}))
'''


# --- runtime, machine, cache ------------------------------------------------------------------------------------


def _runtime(profile: Profile, python: str | None, log: Callable[[str], None]) -> dict:
    """The interpreter the members are timed in and what identifies it (for the cache key)."""
    if python is None:
        from toolkit.runtime.sandbox import runtime_python

        python = runtime_python(profile, log)
    info = {"python": str(python), "packages": list(profile.packages)}
    if profile.is_local and python == sys.executable:
        from toolkit.provenance import versions

        from importlib.metadata import PackageNotFoundError, version

        pins = {}
        for dist in ("tensorflow", "tensorflow-cpu", "keras", "numpy"):
            try:
                pins[dist] = version(dist)
            except PackageNotFoundError:
                pass
        info["versions"] = {**{k: v for k, v in versions().items() if k in ("python", "numpy")}, **pins}
    return info


def machine_info() -> dict:
    """What identifies this machine's speed: host, CPU model, core count (part of the cache key)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"node": platform.node(), "machine": platform.machine(), "cpu": model or platform.processor(),
            "cores": os.cpu_count()}


def _image_shape(profile: Profile) -> tuple[int, int, int]:
    shape = tuple(profile.contract.image_shape or (96, 96, 3))
    return (int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) > 2 else 3)


def _default_cache() -> Path:
    from toolkit.runtime.venv import cache_dir

    return cache_dir() / "plan"


def _key(member: PlanMember, batch_size: int, runtime: dict, machine: dict) -> str:
    """The cache key: the network (spec without class names), input, batch, runtime and machine."""
    spec = {k: v for k, v in member.spec.items() if k != "class_names"}
    parts = {"v": PLAN_VERSION, "spec": spec, "input_size": int(member.input_size), "resize": member.resize,
             "fmt": member.fmt, "batch_size": int(batch_size), "python": runtime["python"],
             "packages": runtime["packages"], "versions": runtime.get("versions", {}), "machine": machine}
    return f"{member.variant}-{int(member.input_size)}-{sha256_text(json.dumps(parts, sort_keys=True))[:16]}"


def _read_cache(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    need = ("forward_s", "view_s", "preprocess_s", "load_s", "first_call_s", "import_s")
    return entry if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in need) else None


def _write_cache(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n", encoding="utf-8")
