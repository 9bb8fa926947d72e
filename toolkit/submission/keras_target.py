"""Re-express a Keras 3 model for a profile's Keras and prove it there: the config translated (toolkit/submission/
keras_config.py, every change reported), then rebuilt, loaded with the weights, saved in that Keras' native format,
loaded back and run on the probe images by a child of the profile's interpreter (toolkit/runtime/_keras_convert.py,
started like the sandbox child: isolated, clean environment, no network), and its probabilities held to the
original's within PARITY_ATOL with the same argmax. Used by `build-submission --from-keras` (from_keras.py).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import Profile
from toolkit.submission import keras_config

# The one place the converted model's file name lives: each Keras major's native whole-model format.
NATIVE_FILE = {3: "model.keras", 2: "model.h5"}
PARITY_ATOL = 1e-5
CONVERT_TIME_LIMIT_S = 300.0  # a malformed Keras 2 config loops forever in reconstruct_from_config
CONVERT_SCRIPT = Path(__file__).resolve().parents[1] / "runtime" / "_keras_convert.py"


@dataclass
class Conversion:
    """What re-expressing the model for the profile did and proved (the manifest's `conversion` block)."""

    target_keras: str
    native_file: str
    load_changes: list[dict] = field(default_factory=list)
    removed_layers: list[dict] = field(default_factory=list)
    strip_max_abs_diff: float | None = None
    changes: list[dict] = field(default_factory=list)
    parity: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def target_config(model, profile: Profile) -> tuple[dict, list[dict], object]:
    """The model's config in the form the profile's Keras loads, the changes made, and that Keras' description."""
    target = target_keras_of(profile)
    config, changes = json.loads(model.to_json()), []
    if int(target.major) < 3:
        config, changes = keras_config.to_keras2(config)
    config, dropped = keras_config.drop_unknown(config, target.accepted)
    left = target.incompatibilities(config)
    if left:
        first = left[0]
        raise SubmissionError(f"the {profile.name} runtime's Keras {target.version} cannot load {first.class_name} "
                              f"({first.kind} {first.key!r} at {first.path}); this model cannot be re-expressed for it")
    return config, [c.to_dict() for c in [*changes, *dropped]], target


def convert(model, profile: Profile, x: np.ndarray, reference: np.ndarray, scratch: Path,
            log: Callable[[str], None]) -> tuple[Path, Conversion]:
    """Rebuild, load, save and predict in the profile's runtime; the saved file and the parity it proved."""
    from toolkit.runtime.sandbox import _run_child, runtime_python

    config, changes, target = target_config(model, profile)
    native = NATIVE_FILE[3 if int(target.major) >= 3 else 2]
    root = scratch / "convert"
    for folder in (root / "program", root / "home", root / "io"):
        folder.mkdir(parents=True)
    shutil.copy2(CONVERT_SCRIPT, root / "program" / "_child.py")  # the sandbox's runner starts program/_child.py
    io_dir = root / "io"
    (io_dir / "config.json").write_text(json.dumps(config))
    np.savez(io_dir / "weights.npz", **{f"w{i:05d}": w for i, w in enumerate(model.get_weights())})
    np.save(io_dir / "probes.npy", np.ascontiguousarray(x, dtype=np.float32))
    request = {"config": str(io_dir / "config.json"), "weights": str(io_dir / "weights.npz"),
               "probes": str(io_dir / "probes.npy"), "output": str(io_dir / native), "probs": str(io_dir / "probs.npy"),
               "result": str(io_dir / "result.json"), "batch_size": 32}
    (io_dir / "request.json").write_text(json.dumps(request))
    log(f"converting for {profile.name} (Keras {target.version}): {len(changes)} config change(s)")
    run = _run_child(runtime_python(profile, log), root, io_dir / "request.json", CONVERT_TIME_LIMIT_S,
                     float(profile.memory_limit_mb))
    result = _read_result(io_dir / "result.json", run, profile)
    parity = _parity(np.load(io_dir / "probs.npy"), reference, profile)
    return io_dir / native, Conversion(result.get("keras_version") or str(target.version), native, changes=changes,
                                       parity=parity)


def _read_result(path: Path, run, profile: Profile) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        why = run.killed_for or f"exit status {run.returncode}"
        raise SubmissionError(f"the conversion in the {profile.name} runtime ended without a result ({why}): "
                              f"{run.stderr.strip().splitlines()[-1:] or ''}") from None
    if not result.get("ok"):
        raise SubmissionError(f"the {profile.name} runtime (Keras {result.get('keras_version', '?')}) could not "
                              f"{result.get('phase')} the converted model: {result.get('error')}")
    return result


def _parity(probs: np.ndarray, reference: np.ndarray, profile: Profile) -> dict:
    """Max abs diff and argmax agreement of the target's outputs vs the original's; refused past PARITY_ATOL."""
    if probs.shape != reference.shape:
        raise SubmissionError(f"the {profile.name} runtime's outputs have shape {probs.shape}, the original's {reference.shape}")
    diff = float(np.max(np.abs(probs - reference)))
    same = int(np.sum(np.argmax(probs, axis=1) == np.argmax(reference, axis=1)))
    parity = {"max_abs_diff": diff, "atol": PARITY_ATOL, "argmax_equal": same, "probes": int(len(reference))}
    if diff > PARITY_ATOL or same != len(reference):
        raise SubmissionError(f"the model converted for {profile.name} differs from the original on the probes: max abs "
                              f"diff {diff:.3g} (tolerance {PARITY_ATOL:g}), argmax equal on {same}/{len(reference)}")
    return parity



def target_keras_of(profile: Profile):
    """The profile's Keras as toolkit.runtime.keras_compat describes it (its runtime venv built first if missing)."""
    from toolkit.runtime.keras_compat import target_keras
    from toolkit.runtime.sandbox import runtime_python

    runtime_python(profile)
    target = target_keras(profile)
    if target is None:
        raise SubmissionError(f"profile {profile.name}: its runtime has no Keras cbtool can describe")
    return target


def describe_conversion(conversion: dict) -> str:
    """One human paragraph: layers removed, config changes grouped by class.argument, parity."""
    from collections import Counter

    lines = []
    if conversion.get("removed_layers"):
        names = ", ".join(f"{r['path']} ({r['class_name']}{_inside(r['value'])})" for r in conversion["removed_layers"])
        lines.append(f"stripped {names}: outputs unchanged (max abs diff {conversion['strip_max_abs_diff']:g})")
    for what, changes in (("to load it here", conversion.get("load_changes")), (f"for Keras {conversion['target_keras']}",
                                                                                  conversion.get("changes"))):
        if changes:
            groups = Counter(f"{c['class_name']}.{c['key']} {c['action']}" for c in changes)
            top = ", ".join(f"{k} x{n}" for k, n in groups.most_common(6))
            lines.append(f"{len(changes)} config change(s) {what}: {top}{', ...' if len(groups) > 6 else ''}")
    p = conversion.get("parity") or {}
    lines.append(f"saved as {conversion['native_file']} by Keras {conversion['target_keras']}; parity on {p.get('probes')} "
                 f"probes: max abs diff {p.get('max_abs_diff', float('nan')):.3g} (<= {p.get('atol')}), argmax equal "
                 f"{p.get('argmax_equal')}/{p.get('probes')}")
    return "\n".join(lines)


def _inside(value) -> str:
    """': RandomFlip, RandomRotation' for a removed Sequential's layers."""
    return ": " + ", ".join(value) if isinstance(value, list) else ""
