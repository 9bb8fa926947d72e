"""A notebook model's Keras config as plain data: find what no grader can load, strip augmentation, re-express it
for another Keras (drop the arguments it does not know; Keras 3 -> Keras 2 structure).

TensorFlow-free: everything here reads and writes the JSON dicts `model.to_json()` and an `.h5`'s `model_config`
hold. `build-submission --from-keras` (toolkit/submission/from_keras.py) loads, proves and converts around it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator

from toolkit.errors import SubmissionError

# Keras preprocessing layers that only act while training (pass-through at inference); besides every Random* class.
TRAINING_ONLY = frozenset({"RandAugment", "AugMix", "CutMix", "MixUp"})
CONTAINERS = frozenset({"Functional", "Model", "Sequential", "Pipeline"})
# Keras 3 activation names Keras 2 knows under another name for the same function (x * sigmoid(x)).
ACTIVATIONS_TO_KERAS2 = {"silu": "swish"}
# Packages whose layers the graders are not known to have (DESIGN.md §2).
FOREIGN_PACKAGES = ("keras_cv", "keras_hub", "keras_nlp")


@dataclass(frozen=True)
class Change:
    """One edit of the config: where (`path`), which argument, its value, and what became of it."""

    path: str
    class_name: str
    key: str
    value: object
    action: str  # "dropped" | "translated" | "removed_layer"
    to: object = None

    def to_dict(self) -> dict:
        return {"path": self.path, "class_name": self.class_name, "key": self.key, "value": self.value,
                "action": self.action, "to": self.to}


def layer_entries(config: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """(path, entry) of every layer, depth first through nested Functional/Sequential models."""
    for index, entry in enumerate(_layers_of(config)):
        name = entry.get("name") or (entry.get("config") or {}).get("name") or str(index)
        here = f"{path}/{name}" if path else str(name)
        yield here, entry
        if entry.get("class_name") in CONTAINERS:
            yield from layer_entries(entry, here)


def _layers_of(config: dict) -> list[dict]:
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        return inner["layers"]
    return []


def module_of(entry: dict) -> str:
    """The module a layer entry names ('' for a Keras 2 inner layer, which names none)."""
    return str(entry.get("module") or "")


def refuse_foreign(config: dict, source: str, is_keras_layer: Callable[[str], bool]) -> None:
    """SubmissionError naming the first layer from keras_cv/keras_hub or a custom class the graders cannot import."""
    for path, entry in layer_entries(config):
        cls, module = entry.get("class_name", "?"), module_of(entry)
        if module.split(".")[0] in FOREIGN_PACKAGES:
            raise SubmissionError(f"{source}: layer {path!r} is {cls} from {module}; the graders are not known to have "
                                  f"{module.split('.')[0]} (rebuild it from core Keras layers and retrain)")
        in_keras = module == "keras" or module.startswith("keras.")
        custom = ("module" in entry and not in_keras) or (not module and not is_keras_layer(cls))
        if custom and cls not in CONTAINERS:
            registered = entry.get("registered_name") or cls
            raise SubmissionError(f"{source}: layer {path!r} is the custom class {registered!r} (module "
                                  f"{module or 'unknown'}), not registered with Keras here and not importable by the "
                                  "grader's model.py; express it with core Keras layers and retrain")


def is_augmentation(entry: dict) -> bool:
    """A Keras Random*/RandAugment/... layer, or a Sequential/Pipeline made only of them."""
    cls, module = entry.get("class_name", ""), module_of(entry)
    if module.split(".")[0] in FOREIGN_PACKAGES or ("module" in entry and not module):
        return False
    if cls in ("Sequential", "Pipeline"):
        inner = [e for e in _layers_of(entry) if e.get("class_name") != "InputLayer"]
        return bool(inner) and all(is_augmentation(e) for e in inner)
    return cls.startswith("Random") or cls in TRAINING_ONLY


def augmentation_layers(config: dict) -> list[tuple[str, str]]:
    """(path, class name) of every augmentation layer (an all-augmentation Sequential counts once)."""
    found, skip = [], ()
    for path, entry in layer_entries(config):
        if skip and path.startswith(skip):
            continue
        if is_augmentation(entry):
            found.append((path, entry.get("class_name", "?")))
            skip = (path + "/",)
    return found


def strip_augmentation(config: dict) -> tuple[dict, list[Change]]:
    """A copy of a Keras 3 model config without its augmentation layers, consumers rewired to their inputs."""
    config = copy.deepcopy(config)
    removed: list[Change] = []
    _strip(config, "", removed)
    return config, removed


def _strip(model: dict, path: str, removed: list[Change]) -> None:
    inner = model.get("config") or {}
    layers = inner.get("layers")
    if not isinstance(layers, list):
        return
    sequential = model.get("class_name") in ("Sequential", "Pipeline")
    rewire: dict[str, list] = {}
    kept = []
    for entry in layers:
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        here = f"{path}/{name}" if path else str(name)
        if is_augmentation(entry):
            held = [e.get("class_name") for e in _layers_of(entry) if e.get("class_name") != "InputLayer"]
            removed.append(Change(here, entry.get("class_name", "?"), "layer", held or name, "removed_layer"))
            if not sequential:
                rewire[name] = _single_input(entry, here)
            continue
        if entry.get("class_name") in CONTAINERS:
            _strip(entry, here, removed)
        kept.append(entry)
    inner["layers"] = kept
    if rewire:
        _rewire(inner, rewire)


def _single_input(entry: dict, path: str) -> list:
    """keras_history [layer, node, tensor] of the one tensor a (Keras 3) layer entry consumes."""
    nodes = entry.get("inbound_nodes") or []
    args = nodes[0].get("args") if len(nodes) == 1 and isinstance(nodes[0], dict) else None
    if not args or not _is_tensor(args[0]):
        raise SubmissionError(f"layer {path!r}: expected one Keras 3 call on one tensor to strip it, found {nodes!r:.120}")
    return list(args[0]["config"]["keras_history"])


def _is_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _rewire(inner: dict, rewire: dict[str, list]) -> None:
    """Point every reference to a removed layer at the tensor that layer consumed (chains of removals too)."""
    def resolve(history: list) -> list:
        while history and history[0] in rewire:
            history = rewire[history[0]]
        return history

    def visit(value):
        if _is_tensor(value):
            value["config"]["keras_history"] = resolve(list(value["config"]["keras_history"]))
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for entry in inner.get("layers", []):
        visit(entry.get("inbound_nodes") or [])
    for key in ("input_layers", "output_layers"):
        refs = inner.get(key)
        if isinstance(refs, list) and refs and isinstance(refs[0], str):
            inner[key] = resolve(refs)
        elif isinstance(refs, list):
            inner[key] = [resolve(list(r)) for r in refs]


# --- arguments the target Keras does not know ---------------------------------------------------------------------


def drop_unknown(config: dict, accepted: dict[str, frozenset[str]]) -> tuple[dict, list[Change]]:
    """A copy of `config` without the constructor arguments `accepted` (class -> kwargs) does not list, and the changes.

    Only objects whose class the target knows are edited; an unknown class is left for the caller to refuse.
    """
    config = copy.deepcopy(config)
    changes: list[Change] = []
    for path, node in _objects(config, ""):
        known = accepted.get(node["class_name"])
        if known is None or "*" in known or node["class_name"] in CONTAINERS:  # "*": leftover keywords swallowed
            continue
        for key in [k for k in node["config"] if k not in known]:
            changes.append(Change(path, node["class_name"], key, node["config"].pop(key), "dropped"))
    return config, changes


def _objects(value, path: str) -> Iterator[tuple[str, dict]]:
    """(path, node) of every serialized object ({class_name, config: {...}}) below `value`, layers and their
    initializers alike, at paths like `MobileNetV3Small/conv.kernel_initializer`; inbound tensors are skipped."""
    if isinstance(value, dict):
        if isinstance(value.get("class_name"), str) and isinstance(value.get("config"), dict) and not _is_tensor(value):
            yield path, value
        for key, item in value.items():
            if key not in ("inbound_nodes", "build_config", "compile_config"):
                transparent = key in ("config", "layers")  # a layer's path is its model's path + "/" + its name
                yield from _objects(item, path if transparent else f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else index
            yield from _objects(item, f"{path}/{name}" if path else str(name))


# --- Keras 3 -> Keras 2 -------------------------------------------------------------------------------------------


def to_keras2(config: dict) -> tuple[dict, list[Change]]:
    """A Keras 3 model config re-expressed in Keras 2's form (tf.keras 2.15 `model_from_json`): inbound nodes as
    [[layer, node, tensor, kwargs]], dtype policies as names, InputLayer's batch_input_shape, no module keys.

    Keras 3 operations (`keras.src.ops.*` nodes, e.g. `x + 3.0` in MobileNetV3) have no Keras 2 layer: refused.
    """
    changes: list[Change] = []
    return _model2(copy.deepcopy(config), "", changes), changes


def _model2(model: dict, path: str, changes: list[Change]) -> dict:
    inner = dict(model.get("config") or {})
    cls = model.get("class_name")
    if cls == "Sequential":
        layers = inner.get("layers", [])
        shape = inner.pop("build_input_shape", None)
        if shape and not any(e.get("class_name") == "InputLayer" for e in layers):
            layers = [{"class_name": "InputLayer", "config": {"batch_shape": shape, "dtype": "float32"}}, *layers]
        inner["layers"] = [_entry2(e, path, changes, set(), sequential=True) for e in layers]
    else:
        # Keras 2 numbers a nested model's calls from 1 (its node 0 links its own Input): references shift by one
        nested = {e.get("name") for e in inner.get("layers", []) if _starts_with_input(e)}
        inner["layers"] = [_entry2(e, path, changes, nested) for e in inner.get("layers", [])]
        for key in ("input_layers", "output_layers"):
            refs = inner.get(key) or []
            refs = [refs] if refs and isinstance(refs[0], str) else refs
            inner[key] = [_ref2(list(r), nested) for r in refs]
    inner.pop("dtype", None)
    return {"class_name": "Functional" if cls in ("Functional", "Model") else cls, "config": inner}


def _starts_with_input(entry: dict) -> bool:
    """A nested model Keras 2 rebuilds with an InputLayer first (`_should_skip_first_node`)."""
    if entry.get("class_name") in ("Functional", "Model"):
        return True
    inner = entry.get("config") or {}
    layers = inner.get("layers") or []
    return entry.get("class_name") == "Sequential" and bool(
        inner.get("build_input_shape") or (layers and layers[0].get("class_name") == "InputLayer"))


def _ref2(history: list, nested: set) -> list:
    """[layer, node, tensor] with the node index shifted for a nested model."""
    return [history[0], history[1] + (1 if history[0] in nested else 0), *history[2:]]


def _entry2(entry: dict, path: str, changes: list[Change], nested: set, sequential: bool = False) -> dict:
    name = entry.get("name") or (entry.get("config") or {}).get("name")
    here = f"{path}/{name}" if path else str(name)
    cls, module = entry.get("class_name", "?"), module_of(entry)
    if module.startswith("keras.src.ops"):
        raise SubmissionError(f"layer {here!r} is the Keras 3 operation {module}.{cls} (e.g. `x + 3.0` on a Keras "
                              "tensor); Keras 2 has no layer for it, so this model cannot be re-expressed for a Keras 2 "
                              "runtime (a backbone built from layers only, e.g. EfficientNetV2B0, can)")
    if cls in CONTAINERS:
        out = _model2(entry, here, changes)
    else:
        out = {"class_name": cls, "config": _config2(entry.get("config") or {}, here, cls, changes)}
    if not sequential:
        out["name"] = name
        out["inbound_nodes"] = [_node2(n, here, nested) for n in entry.get("inbound_nodes") or []]
    return out


def _config2(config: dict, path: str, cls: str, changes: list[Change]) -> dict:
    out = {}
    for key, value in config.items():
        if key == "dtype" and isinstance(value, dict):
            out[key] = _dtype2(value, path, cls, changes)
        elif key.endswith("activation") and isinstance(value, str) and value in ACTIVATIONS_TO_KERAS2:
            out[key] = ACTIVATIONS_TO_KERAS2[value]
            changes.append(Change(path, cls, key, value, "translated", out[key]))
        elif cls == "InputLayer" and key == "batch_shape":
            out["batch_input_shape"] = value
            changes.append(Change(path, cls, key, value, "translated", "batch_input_shape"))
        else:
            out[key] = _plain2(value)
    return out


def _dtype2(policy: dict, path: str, cls: str, changes: list[Change]) -> str:
    name = (policy.get("config") or {}).get("name")
    if policy.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy", "Policy") or not isinstance(name, str):
        raise SubmissionError(f"layer {path!r}: dtype policy {policy.get('class_name')} has no Keras 2 equivalent")
    changes.append(Change(path, cls, "dtype", policy.get("class_name"), "translated", name))
    return name


def _plain2(value):
    """Nested objects (initializers, regularizers) without Keras 3's module/registered_name keys."""
    if isinstance(value, dict):
        if isinstance(value.get("class_name"), str) and "config" in value:
            return {"class_name": value["class_name"], "config": _plain2(value["config"])}
        return {k: _plain2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain2(v) for v in value]
    return value


def _node2(node: dict, path: str, nested: set) -> list:
    """One Keras 3 call {"args": [...], "kwargs": {...}} as Keras 2's [[layer, node, tensor, kwargs], ...]."""
    args, kwargs = node.get("args") or [], {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
    tensors = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if not tensors or not all(_is_tensor(t) for t in tensors) or any(_has_tensor(v) for v in kwargs.values()):
        raise SubmissionError(f"layer {path!r}: a call with non-tensor arguments {args!r:.120} has no Keras 2 form")
    return [[*_ref2(list(t["config"]["keras_history"]), nested), dict(kwargs)] for t in tensors]


def _has_tensor(value) -> bool:
    if _is_tensor(value):
        return True
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return isinstance(value, list) and any(_has_tensor(v) for v in value)


def unshift_keras2(config: dict) -> dict:
    """A copy of a Keras 2 config whose references to nested models count their calls from 0, as Keras 3's legacy
    loader expects (it rejects Keras 2's `['base', 1, 0, {}]` as a disconnected graph)."""
    config = copy.deepcopy(config)
    _unshift(config)
    return config


def _unshift(model: dict) -> None:
    inner = model.get("config") or {}
    layers = inner.get("layers")
    if not isinstance(layers, list):
        return
    nested = {e.get("name") for e in layers if _starts_with_input(e)}
    for entry in layers:
        if entry.get("class_name") in CONTAINERS:
            _unshift(entry)
        for node in entry.get("inbound_nodes") or []:
            for ref in node if isinstance(node, list) else []:
                if isinstance(ref, list) and ref and ref[0] in nested:
                    ref[1] -= 1
    for key in ("input_layers", "output_layers"):
        refs = inner.get(key) or []
        for ref in ([refs] if refs and isinstance(refs[0], str) else refs):
            if ref and ref[0] in nested:
                ref[1] -= 1
