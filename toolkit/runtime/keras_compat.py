"""Keras compatibility by what the target Keras accepts, not by version numbers. TensorFlow-free (parent side).

A runtime's Keras is asked once, in a child of its own interpreter (`_keras_args.py`), which classes it can resolve
(by public name and by module) and which constructor keywords each accepts; the table is cached under
`cache_dir()/keras-args/`. `KerasTarget.incompatibilities(config)` then walks a saved model's config (a `.keras`
config.json or an `.h5` model_config) the way the target's deserializer does and names each class it could not find
and each argument its constructor would reject. `check` and `build-submission --from-keras` read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import RuntimeProfileError
from toolkit.runtime.profiles import Profile

CHILD_SCRIPT = Path(__file__).with_name("_keras_args.py")
CHILD_TIMEOUT_S = 300
# Public namespaces a legacy .h5 config (no "module" key) resolves a bare class name in, most specific first.
_H5_NAMESPACES = ("keras.layers", "keras.models", "keras", "keras.initializers", "keras.regularizers",
                  "keras.constraints", "keras.mixed_precision", "keras.dtype_policies")
_SPECIAL = ("__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__", "__typespec__",
            "__lambda__")


@dataclass(frozen=True)
class Incompatibility:
    """One thing the target Keras would reject: an argument a constructor does not take, or a class it cannot find."""

    path: str  # where in the config, relative to the root object's config: "layers[3].config.kernel_initializer"
    class_name: str  # e.g. "GlorotUniform"
    key: str | None  # the rejected constructor argument, None for an unknown class
    kind: str  # "unknown_argument" | "unknown_class"

    def describe(self) -> str:
        """`GlorotUniform(input_axes=...)` or `class RandomCutout`, for messages."""
        return f"{self.class_name}({self.key}=...)" if self.key else f"class {self.class_name}"


@dataclass
class KerasTarget:
    """What one runtime's Keras accepts. `accepted`: class name -> constructor keywords (union over same-named
    classes; `*` in a set = leftover keywords are swallowed unchecked)."""

    version: str
    major: int
    accepted: dict[str, frozenset[str]]
    _table: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_table(cls, table: dict) -> KerasTarget:
        accepted: dict[str, set[str]] = {}
        for entry in table["classes"].values():
            accepted.setdefault(entry["name"], set()).update(entry["accepts"] + (["*"] if entry["any"] else []))
        version = str(table["keras_version"])
        return cls(version=version, major=int(version.split(".")[0]),
                   accepted={k: frozenset(v) for k, v in accepted.items()}, _table=table)

    def incompatibilities(self, config: dict) -> list[Incompatibility]:
        """Every class the target cannot resolve and every constructor argument it would reject, in config order."""
        found: list[Incompatibility] = []
        self._walk(config, "", found)
        return found

    def _walk(self, node, path: str, found: list[Incompatibility]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._walk(item, f"{path}[{i}]", found)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("class_name"), str) and "config" in node:
            self._object(node, path, found)
            return
        for key, value in node.items():
            self._walk(value, f"{path}.{key}".lstrip("."), found)

    def _object(self, node: dict, path: str, found: list[Incompatibility]) -> None:
        """A serialized object {class_name, config, module?}: resolve the class, check its keywords, descend."""
        name, inner = node["class_name"], node["config"]
        if name in _SPECIAL:
            return
        if name == "function":
            if node.get("module") == "keras.activations" and isinstance(inner, str) and inner not in self._activations:
                found.append(Incompatibility(path, inner, None, "unknown_class"))
            return
        entry = self._resolve(node.get("module"), name, node.get("registered_name"))
        here = f"{path}.config" if path else ""  # paths are relative to the root object's config
        if entry is False:
            found.append(Incompatibility(path, name, None, "unknown_class"))
        elif entry is not None and isinstance(inner, dict) and not entry["any"]:
            accepts = set(entry["accepts"])
            found += [Incompatibility(path, name, key, "unknown_argument") for key in inner if key not in accepts]
        if isinstance(inner, dict):
            # an entry that swallows unknown keys (Sequential.from_config, InputLayer) never deserializes their values
            skip = set() if entry is None or entry is False or not entry["any"] else set(inner) - set(entry["accepts"])
            for key, value in inner.items():
                if key in skip:
                    continue
                if key.endswith("activation") and isinstance(value, str) and value not in self._activations:
                    found.append(Incompatibility(f"{here}.{key}".lstrip("."), value, None, "unknown_class"))
                else:
                    self._walk(value, f"{here}.{key}".lstrip("."), found)
        compile_config = node.get("compile_config")  # load_model(compile=True) passes it to Model.compile(**config)
        if isinstance(compile_config, dict):
            where = f"{path}.compile_config".lstrip(".")
            allowed = set(self._table.get("compile_args", ["*"]))
            found += [Incompatibility(where, "compile", key, "unknown_argument")
                      for key in compile_config if "*" not in allowed and key not in allowed]
            self._walk(compile_config, where, found)

    @property
    def _activations(self) -> set[str]:
        return set(self._table.get("activations", ()))

    def _resolve(self, module: str | None, name: str, registered: str | None) -> dict | None | bool:
        """The class's table entry; False when the target cannot find it; None when it cannot tell (a module the
        child did not load, or a registered custom object)."""
        table = self._table
        if module is None:  # legacy .h5: a bare class name among the public namespaces and the model classes
            key = next((table["api"][f"{ns}.{name}"] for ns in _H5_NAMESPACES if f"{ns}.{name}" in table["api"]), None)
            if key:
                return table["classes"][key]
            if name in self.accepted:
                return {"accepts": sorted(self.accepted[name]), "any": "*" in self.accepted[name]}
            return None if registered and registered != name else False
        if module == "keras" or module.startswith("keras."):
            key = table["api"].get(f"{module}.{name}")
            if key:
                return table["classes"][key]
        if module in table["modules"]:
            key = table["modules"][module].get(name) or table["modules"][module].get(registered or "")
            return table["classes"][key] if key else False
        if module.split(".")[0] != "keras" or module in set(table["existing_modules"]):
            return None  # another package's module (flagged by check by name) or one the child did not import
        return False


def saved_keras_version(data: bytes, name: str) -> str | None:
    """The Keras version that saved a `.keras` (metadata.json) or `.h5` (root attribute keras_version) file."""
    if name.endswith(".keras"):
        return str(_keras_archive(data)[1].get("keras_version") or "") or None
    return _h5_attr(data, "keras_version")


def saved_keras_config(data: bytes, name: str) -> dict | None:
    """The model config of a `.keras` (config.json) or full-model `.h5` (model_config); None for a weights-only h5.
    Raises ValueError for a file that is not a readable archive."""
    if name.endswith(".keras"):
        return _keras_archive(data)[0]
    text = _h5_attr(data, "model_config")
    return json.loads(text) if text else None


def _keras_archive(data: bytes) -> tuple[dict, dict]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            names = inner.namelist()
            config = json.loads(inner.read("config.json")) if "config.json" in names else {}
            metadata = json.loads(inner.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"not a .keras archive ({exc})") from exc
    return config, metadata


def _h5_attr(data: bytes, attr: str) -> str | None:
    import h5py  # a Keras dependency; TensorFlow-free

    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            value = handle.attrs.get(attr)
    except (OSError, ValueError) as exc:
        raise ValueError(f"not a readable HDF5 file ({exc})") from exc
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --- the target's table -------------------------------------------------------------------------------------------


def target_keras(profile: Profile) -> KerasTarget | None:
    """The Keras of `profile`'s runtime, from the cached table (asked once in a child of the runtime's interpreter).
    None when the runtime venv does not exist yet: check never creates one."""
    python = _runtime_interpreter(profile)
    if python is None:
        return None
    path = _table_path(python, profile)
    if path.is_file():
        try:
            return KerasTarget.from_table(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: ask again
    table = _ask_runtime(python, profile.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return KerasTarget.from_table(table)


def _runtime_interpreter(profile: Profile) -> Path | None:
    if profile.is_local:
        return Path(sys.executable)
    from toolkit.runtime.venv import find_venv

    return find_venv(profile.name, list(profile.packages))


def _table_path(python: Path, profile: Profile) -> Path:
    """Keyed by the interpreter, the pins, the venv's build time (a rebuilt venv is asked again) and the child
    script's own bytes (a changed script writes a new table)."""
    from toolkit.runtime.venv import cache_dir

    try:
        stamp = str(python.parent.parent.stat().st_mtime_ns) if not profile.is_local else _local_keras_version()
    except OSError:
        stamp = ""
    script = hashlib.sha256(CHILD_SCRIPT.read_bytes()).hexdigest()
    text = "\n".join([str(python), *sorted(profile.packages), stamp, script])
    return cache_dir() / "keras-args" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


def _local_keras_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras")
    except PackageNotFoundError:
        return ""


def _ask_runtime(python: Path, profile_name: str) -> dict:
    """Run `_keras_args.py` in the runtime's interpreter (isolated, clean environment) and read its JSON."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "HOME": os.environ.get("HOME", tempfile.gettempdir())}
    with tempfile.TemporaryDirectory(prefix="cbtool-keras-args-") as tmp:
        out = Path(tmp) / "table.json"
        try:
            proc = subprocess.run([str(python), "-I", str(CHILD_SCRIPT), str(out)], capture_output=True, text=True,
                                  env=env, cwd=tmp, timeout=CHILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeProfileError(f"{python}: could not ask {profile_name}'s Keras what it accepts ({exc})") from exc
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeProfileError(f"{python}: could not ask {profile_name}'s Keras what it accepts "
                                      f"(exit {proc.returncode}: {tail})")
        return json.loads(out.read_text(encoding="utf-8"))
