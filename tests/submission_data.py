"""One convnext_test run + export shared by the submission tests (made once per test session, TF in-process)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

INPUT_SIZE = 64  # the probes are 96x96, so the resize path of the preprocessing is exercised too


@functools.lru_cache(maxsize=None)
def shared_export() -> tuple[Path, Path]:
    """(run_dir, export_dir): a convnext_test run (random weights, input_size 64, 8 probes), exported in all formats."""
    from export_data import make_run_dir
    from toolkit.export import export_run

    base = Path(tempfile.mkdtemp(prefix="cbtool-subtest-"))
    atexit.register(shutil.rmtree, base, True)
    run = make_run_dir(base / "run", input_size=INPUT_SIZE, n_probe=8)
    export = base / "export"
    export_run(run, export, ["portable", "keras", "onnx"])
    return run, export


def pinned_runtime(name: str):
    """The built-in profile `name` with its pinned venv created (cached); the test is skipped only without a registry."""
    import pytest

    from toolkit.errors import RuntimeProfileError
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python

    profile = get_profile(name)
    try:
        runtime_python(profile)
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"runtime {name} unavailable: {exc}")
    return profile


def any_class_count(profile):
    """`profile` with its contract's class count and image shape lifted: for the shared 8-class export under a contract
    that fixes another count (an2dl-2023's 2 leaf classes), where the test is about something else."""
    import dataclasses

    contract = dataclasses.replace(profile.contract, num_classes=None, image_shape=None)
    return dataclasses.replace(profile, contract=contract)


def any_class_count_profiles(path: Path, *names: str) -> Path:
    """A profiles file defining `<name>-any` for each built-in `name`: the same packages (so the same cached runtime)
    and contract, with the class count and image shape lifted, for CLI tests whose fixtures have other counts/sizes."""
    import dataclasses
    import json

    from toolkit.runtime.profiles import get_profile

    def toml(table: dict) -> list[str]:  # JSON scalars and string lists are valid TOML; TOML has no null
        return [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in table.items() if v is not None]

    lines = []
    for name in names:
        profile = any_class_count(get_profile(name))
        fields = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile) if f.name not in ("name", "contract")}
        contract = {k: v for k, v in profile.contract.to_dict().items() if k != "key"}
        lines += [f"[profiles.{name}-any]", *toml(fields), f"[profiles.{name}-any.contract]", *toml(contract), ""]
    path.write_text("\n".join(lines))
    return path


def probe(export_dir: Path) -> dict[str, np.ndarray]:
    with np.load(export_dir / "probe.npz") as data:
        return {k: data[k] for k in data.files}


def patch_model_py(src_zip: Path, dst_zip: Path, old: str, new: str) -> Path:
    """Copy a zip, replacing `old` by `new` in its model.py (a planted bug); fails if `old` is absent."""
    with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(dst_zip, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "model.py":
                text = data.decode()
                if old not in text:
                    raise AssertionError(f"planted bug: {old!r} not found in model.py")
                data = text.replace(old, new).encode()
            zout.writestr(info, data)
    return dst_zip
