"""Runtime profiles: what the grader has (contract year, pinned packages, input forms, limits)."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.errors import RuntimeProfileError


@dataclass(frozen=True)
class Profile:
    """A grader runtime. `packages` empty means the current interpreter (the `local` profile)."""

    name: str
    contract: int  # 2024: class Model, __init__(self); 2023: class model, __init__(self, path) + empty `metadata`
    packages: tuple[str, ...] = ()
    input_dtypes: tuple[str, ...] = ("uint8", "float32")
    input_tensor: bool = False  # 2023 fed a tf.Tensor
    time_limit_s: float = 600.0
    memory_limit_mb: int = 8192
    size_limit_mb: float = 300.0
    keras_major: int = 3
    keras_version: str | None = None  # the runtime's Keras, for the `.keras` version check
    importable: tuple[str, ...] = ("numpy", "tensorflow", "keras")
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return not self.packages

    def to_dict(self) -> dict:
        return asdict(self)


BUILTIN = {
    "an2dl-2024": Profile(
        name="an2dl-2024",
        contract=2024,
        packages=("tensorflow-cpu==2.17.0", "keras==3.4.1", "numpy<2"),
        input_dtypes=("uint8", "float32"),
        time_limit_s=600.0,
        memory_limit_mb=8192,
        size_limit_mb=150.0,
        keras_major=3,
        keras_version="3.4.1",
        importable=("numpy", "tensorflow", "keras", "scipy", "PIL", "sklearn", "pandas", "h5py"),
        description="AN2DL 2024 (Codabench, blood cells): class Model(), predict(X uint8/float32 (n,96,96,3)) -> (n,) indices",
    ),
    "an2dl-2023": Profile(
        name="an2dl-2023",
        contract=2023,
        packages=("tensorflow-cpu==2.15.1", "numpy<2"),
        input_dtypes=("float32",),
        input_tensor=True,
        time_limit_s=600.0,
        memory_limit_mb=8192,
        size_limit_mb=300.0,
        keras_major=2,
        keras_version="2.15.0",
        importable=("numpy", "tensorflow", "keras", "scipy", "PIL", "sklearn", "pandas", "h5py"),
        description="AN2DL 2023 (CodaLab, leaves): class model(path), empty `metadata`, predict(tf.Tensor float32) -> indices",
    ),
}


def local_profile() -> Profile:
    """The current interpreter, still run in a clean child process (evaluated on call, not at import)."""
    keras_version = None
    try:
        from importlib.metadata import version

        keras_version = version("keras")
    except Exception:
        pass
    return Profile(
        name="local",
        contract=2024,
        packages=(),
        keras_major=int(keras_version.split(".")[0]) if keras_version else 3,
        keras_version=keras_version,
        importable=("numpy", "tensorflow", "keras", "onnxruntime", "scipy", "PIL", "h5py"),
        description=f"the current interpreter ({sys.executable})",
    )


def get_profile(name: str, profiles_file: str | os.PathLike | None = None) -> Profile:
    """A built-in profile by name, `local`, or one defined in a user TOML file."""
    if name == "local":
        return local_profile()
    if name in BUILTIN:
        return BUILTIN[name]
    user = load_user_profiles(profiles_file) if profiles_file else {}
    if name in user:
        return user[name]
    known = sorted([*BUILTIN, "local", *user])
    raise RuntimeProfileError(f"unknown runtime profile {name!r}; expected one of {', '.join(known)}")


def load_user_profiles(path: str | os.PathLike) -> dict[str, Profile]:
    """Profiles from a TOML file: one `[profiles.NAME]` table each, fields as in `Profile`."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RuntimeProfileError(f"{path}: no such profiles file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeProfileError(f"{path}: not valid TOML ({exc})") from exc
    out = {}
    for name, table in (data.get("profiles") or {}).items():
        out[name] = _profile_from_table(path, name, table)
    return out


def _profile_from_table(path: Path, name: str, table: dict) -> Profile:
    allowed = set(Profile.__dataclass_fields__) - {"name"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RuntimeProfileError(f"{path}: profile {name!r} has unknown field {unknown[0]!r}; expected some of {sorted(allowed)}")
    if table.get("contract") not in (2023, 2024):
        raise RuntimeProfileError(f"{path}: profile {name!r} field 'contract' must be 2023 or 2024, found {table.get('contract')!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return Profile(name=name, **values)
