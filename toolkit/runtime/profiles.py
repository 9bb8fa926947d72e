"""Runtime profiles: what a grader has (its contract, pinned packages, limits), as data.

A profile names the grader's `Contract` (toolkit/contract.py), the Python packages of its runtime, and its limits.
Limits that cbtool only inferred (the size cap, the memory budget) are settings here, and messages that use them say
"this profile assumes ...". Built-in: an2dl-2024, an2dl-2023 and local (the current interpreter). Users add their
own in a TOML file, checked by the same typed validator as the training config:

    [profiles.my-challenge]
    packages = ["tensorflow-cpu==2.17.0", "keras==3.4.1", "numpy<2"]
    [profiles.my-challenge.contract]      # or: contract = 2024 / 2023
    class_name = "Predictor"
    dtypes = ["float32"]
    cwd = "program"
    methods = ["fit", "predict"]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.contract import AN2DL_2023, AN2DL_2024, LOCAL_2024, Contract, contract_from
from toolkit.errors import RuntimeProfileError, did_you_mean
from toolkit.settings import check_settings

# Profile-level keys of earlier profile files, folded into the contract (`input_dtypes` -> contract.dtypes).
_LEGACY = {"input_dtypes": "dtypes", "input_tensor": "input"}


@dataclass(frozen=True)
class Profile:
    """A grader runtime. `packages` empty means the current interpreter (the `local` profile)."""

    name: str
    contract: Contract
    packages: tuple[str, ...] = ()
    time_limit_s: float = 600.0
    memory_limit_mb: int = 8192
    size_limit_mb: float = 300.0  # the upload limit this profile assumes (zip bytes)
    unpacked_limit_mb: float = 2048.0  # the most a submission may unpack to (weights barely compress: ~1.1x the zip)
    keras_major: int = 3
    keras_version: str | None = None  # the runtime's Keras, for the `.keras` version check
    importable: tuple[str, ...] = ("numpy", "tensorflow", "keras")
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.contract, Contract):  # the 2024 / 2023 shorthand
            object.__setattr__(self, "contract", contract_from(self.contract, f"profile {self.name!r}", self.name))

    @property
    def is_local(self) -> bool:
        return not self.packages


_GRADER_MODULES = ("numpy", "tensorflow", "keras", "scipy", "PIL", "sklearn", "pandas", "h5py")
BUILTIN = {
    "an2dl-2024": Profile(
        name="an2dl-2024",
        contract=AN2DL_2024,
        packages=("tensorflow-cpu==2.17.0", "keras==3.4.1", "numpy<2"),
        size_limit_mb=150.0,
        keras_version="3.4.1",
        importable=_GRADER_MODULES,
        description="AN2DL 2024 (Codabench, blood cells): class Model(), predict(X uint8/float32 (n,96,96,3)) -> (n,) indices",
    ),
    "an2dl-2023": Profile(
        name="an2dl-2023",
        contract=AN2DL_2023,
        packages=("tensorflow-cpu==2.15.1", "numpy<2"),
        size_limit_mb=300.0,
        keras_major=2,
        keras_version="2.15.0",
        importable=_GRADER_MODULES,
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
        contract=LOCAL_2024,
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
    raise RuntimeProfileError(unknown_profile_message(name, [*BUILTIN, "local", *user]))


def profile_names(profiles_file: str | os.PathLike | None = None) -> list[str]:
    """Every profile name `get_profile` accepts: the built-ins, `local`, and those in `profiles_file`."""
    user = load_user_profiles(profiles_file) if profiles_file else {}
    return sorted([*BUILTIN, "local", *user])


def unknown_profile_message(name: str, known) -> str:
    """'unknown profile X (did you mean Y?); known: ...', the one wording for a profile name nobody defined."""
    return f"unknown profile {name}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"


def load_user_profiles(path: str | os.PathLike) -> dict[str, Profile]:
    """Profiles from a TOML file: one `[profiles.NAME]` table each, fields as in `Profile`."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RuntimeProfileError(f"{path}: no such profiles file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeProfileError(f"{path}: cannot read the profiles file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeProfileError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - {"profiles"})
    if unknown:
        raise RuntimeProfileError(f"{path}: unknown top-level key {unknown[0]!r}; expected [profiles.NAME] tables")
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise RuntimeProfileError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables, found {type(tables).__name__}")
    return {name: _profile_from_table(path, name, table) for name, table in tables.items()}


def _profile_from_table(path: Path, name: str, table) -> Profile:
    source = f"{path}: profile {name!r}"
    if not isinstance(table, dict):
        raise RuntimeProfileError(f"{source}: expected a [profiles.{name}] table of fields, found {type(table).__name__} {table!r}")
    if name in BUILTIN or name == "local":
        raise RuntimeProfileError(f"{source}: the name is taken by a built-in profile; choose another")
    table = dict(table)
    if "contract" not in table:
        raise RuntimeProfileError(f"{source}: field 'contract' is required (2024, 2023, or a [profiles.{name}.contract] table)")
    legacy = {field: table.pop(key) for key, field in _LEGACY.items() if key in table}
    raw_contract = table.pop("contract")
    values = check_settings(Profile, table, source, error=RuntimeProfileError, skip=("name", "contract"),
                            extra_known=("contract", *_LEGACY), where="field")
    contract = contract_from(raw_contract, source, name)
    if legacy:
        contract = _with_legacy(contract, legacy, source)
    return Profile(name=name, contract=contract, **values)


def _with_legacy(contract: Contract, legacy: dict, source: str) -> Contract:
    """`input_dtypes = [...]` / `input_tensor = true` beside a contract shorthand, as earlier profile files wrote it."""
    values = {}
    if "dtypes" in legacy:
        values["dtypes"] = legacy["dtypes"]
    if "input" in legacy:
        values["input"] = "tensor" if legacy["input"] is True else "numpy" if legacy["input"] is False else legacy["input"]
    checked = check_settings(Contract, values, f"{source} contract", error=RuntimeProfileError, skip=("key",), where="field")
    try:
        return dataclasses.replace(contract, **checked)
    except ValueError as exc:
        raise RuntimeProfileError(f"{source} contract: {exc}") from None
