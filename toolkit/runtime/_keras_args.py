"""Child script, run with a runtime's interpreter: dump what that runtime's Keras accepts when it loads a model.

    python _keras_args.py OUT.json

Writes {"keras_version", "classes": {id: {"name", "accepts", "any"}}, "api": {public name: id}, "modules":
{module: {attribute: id}}, "existing_modules", "activations", "compile_args"}. `accepts` are the constructor keyword
names `cls.from_config(config)` lets through: the __init__ parameters along the MRO, following **kwargs into the base
class (Keras 3 `Layer.__init__` raises on leftovers after popping `input_dim`/`input_shape`; Keras 2 checks them
against its `allowed_kwargs` set), plus the keys an overridden `from_config` reads itself. `any` marks a class that
swallows unknown keys unchecked (Keras 3 `InputLayer`'s **kwargs; `Sequential.from_config`, which reads name and
layers only). Standard library only at the top: this file runs where cbtool is not installed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
import sys
import textwrap

SERIALIZABLE = ("from_config", "get_config")


def _keras():
    """The runtime's Keras and its public-name registry (Keras 3: keras.src.api_export; Keras 2: TF's tf_export)."""
    import keras

    try:
        from keras.src.api_export import REGISTERED_NAMES_TO_OBJS as registry
    except ImportError:
        from tensorflow.python.util.tf_export import _NAME_TO_SYMBOL_MAPPING as registry
    return keras, registry


def _function_tree(fn) -> ast.FunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _keys_read(tree: ast.AST, name: str) -> set[str]:
    """String keys read from the dict `name`: name.pop('k'), name.get('k'), name['k'], 'k' in name."""
    keys = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("pop", "get")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == name and node.args):
            keys |= _strings(node.args[0])
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name:
            keys |= _strings(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(c, ast.Name) and c.id == name for c in node.comparators):
            keys |= _strings(node.left)
    return keys


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Set, ast.List, ast.Tuple)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _kwargs_fate(tree: ast.FunctionDef, varkw: str) -> tuple[str, set[str]]:
    """What __init__ does with its **kwargs: 'forwarded' (to another call, e.g. super().__init__), 'validated'
    (checked against a set, or `if kwargs: raise`), else 'open' (swallowed unchecked); plus the extra names allowed."""
    assigned = {t.id: _strings(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = node.args
            if name.endswith("validate_kwargs") and args and isinstance(args[0], ast.Name) and args[0].id == varkw:
                allowed = assigned.get(args[1].id, set()) if len(args) > 1 and isinstance(args[1], ast.Name) else set()
                return "validated", allowed | (_strings(args[1]) if len(args) > 1 else set())
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == varkw
                and any(isinstance(n, ast.Raise) for n in node.body)):
            return "validated", set()
    forwarded = any(isinstance(node, ast.Call) and any(k.arg is None and isinstance(k.value, ast.Name)
                                                       and k.value.id == varkw for k in node.keywords)
                    for node in ast.walk(tree))
    return ("forwarded" if forwarded else "open"), set()


def _init_accepts(cls) -> tuple[set[str], bool]:
    """(keyword names the constructor chain accepts, True when leftover **kwargs are accepted unchecked)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return names, False
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return names, True
        names |= {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        varkw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        if varkw is None:
            return names, False
        tree = _function_tree(init)
        if tree is None:
            return names, True
        names |= _keys_read(tree, varkw)
        fate, allowed = _kwargs_fate(tree, varkw)
        if fate == "validated":
            return names | allowed, False
        if fate == "open":
            return names, True
    return names, False


def _from_config(cls) -> tuple[set[str], bool]:
    """(keys the from_config that runs reads itself, following its helpers and super() calls; True when it then
    passes the whole config on as `cls(**config)`, so that any other key reaches the constructor). Keras'
    Sequential.from_config reads name/layers and ignores the rest."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        fn = getattr(klass.__dict__.get("from_config"), "__func__", None)
        if fn is None:
            continue
        keys |= _config_keys(fn, 1, depth=2)
        tree = _function_tree(fn)
        if tree is None:
            return keys, True
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        if any(isinstance(c.func, ast.Name) and c.func.id == "cls" and any(k.arg is None for k in c.keywords)
               for c in calls):
            return keys, True
        if not any(isinstance(c.func, ast.Attribute) and c.func.attr == "from_config" for c in calls):
            return keys, False
    return keys, True


def _config_keys(fn, position: int, depth: int) -> set[str]:
    """Keys `fn` reads from its parameter at `position`, and string lists it tests them against."""
    tree = _function_tree(fn)
    if tree is None or len(tree.args.args) <= position:
        return set()
    name = tree.args.args[position].arg
    keys = _keys_read(tree, name)
    keys |= {s for node in ast.walk(tree) if isinstance(node, (ast.List, ast.Tuple, ast.Set)) for s in _strings(node)}
    if depth > 0:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                at = next((i for i, a in enumerate(node.args) if isinstance(a, ast.Name) and a.id == name), None)
                callee = _callee(fn, tree, node.func) if at is not None else None
                if callee is not None:
                    keys |= _config_keys(callee, at, depth - 1)
    return keys


def _callee(fn, tree: ast.FunctionDef, func: ast.AST):
    """The function a call names: a global of fn's module, or one imported inside fn (`from m import f`, `m.f`)."""
    scope = dict(getattr(fn, "__globals__", {}))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                try:
                    scope[alias.asname or alias.name] = getattr(importlib.import_module(node.module), alias.name)
                except (ImportError, AttributeError):
                    continue
    target = None
    if isinstance(func, ast.Name):
        target = scope.get(func.id)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        target = getattr(scope.get(func.value.id), func.attr, None)
    return target if inspect.isfunction(target) else None


def _class_id(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _serializable(obj) -> bool:
    return inspect.isclass(obj) and all(hasattr(obj, m) for m in SERIALIZABLE)


def _describe(cls) -> dict:
    accepts, any_kwargs = _init_accepts(cls)
    keys, forwards = _from_config(cls)
    return {"name": cls.__name__, "accepts": sorted(accepts | keys), "any": any_kwargs or not forwards}


def dump() -> dict:
    keras, registry = _keras()
    classes: dict[str, dict] = {}

    def note(obj) -> str:
        key = _class_id(obj)
        if key not in classes:
            classes[key] = _describe(obj)
        return key

    api = {name: note(obj) for name, obj in list(registry.items()) if _serializable(obj)}
    modules = {}
    for mod_name, module in list(sys.modules.items()):
        if (mod_name == "keras" or mod_name.startswith("keras.")) and module is not None:
            found = {attr: note(obj) for attr, obj in list(vars(module).items()) if _serializable(obj)}
            if found:
                modules[mod_name] = found
    existing = set(sys.modules)
    src = sys.modules.get("keras.src")
    if src is not None:
        existing |= {m.name for m in pkgutil.walk_packages(src.__path__, "keras.src.", onerror=lambda _n: None)}
    compile_params = list(inspect.signature(keras.Model.compile).parameters.values())[1:]
    compile_args = [p.name for p in compile_params if p.kind is not p.VAR_KEYWORD]
    if any(p.kind is p.VAR_KEYWORD for p in compile_params):
        compile_args.append("*")
    activations = sorted(n for n, f in vars(keras.activations).items() if callable(f) and not n.startswith("_"))
    version = getattr(keras, "__version__", None) or keras.version()
    return {"keras_version": version, "classes": classes, "api": api, "modules": modules, "activations": activations,
            "compile_args": compile_args,
            "existing_modules": sorted(m for m in existing if m == "keras" or m.startswith("keras."))}


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    data = dump()
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
