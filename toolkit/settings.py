"""The one typed validator for settings read from files or flags (training config, runtime profiles, contracts).

A settings record is a dataclass; its type hints are the schema. `check_settings` turns a mapping into checked,
coerced keyword arguments, or raises the caller's error class with one line naming the source, the key, what was
expected and what was found.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any, Mapping

from toolkit.errors import CbtoolError, ConfigError


def check_settings(record: type, values: Any, source: str, *, error: type[CbtoolError] = ConfigError,
                   skip: tuple[str, ...] = (), extra_known: tuple[str, ...] = (), where: str = "setting") -> dict:
    """Check `values` (must be a mapping) against the fields of dataclass `record`; return {field: coerced value}.

    `skip`: fields that may not be set from outside (e.g. `name`). `extra_known`: keys the caller handles itself,
    listed in the unknown-key message. `where` names the kind of key in messages ("setting", "field").
    """
    if not isinstance(values, Mapping):
        raise error(f"{source}: expected a table of {where}s, found {_describe(values)}")
    schema = {name: allowed for name, allowed in field_types(record).items() if name not in skip}
    checked = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in schema:
            close = [k for k in schema if k.startswith(name[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            known = ", ".join(sorted([*schema, *extra_known]))
            raise error(f"{source}: unknown {where} '{key}'{hint}; known {where}s: {known}")
        checked[name] = coerce(name, value, schema[name], source, error=error, where=where)
    return checked


def field_types(record: type) -> dict[str, tuple]:
    """{field name: the allowed types} from a dataclass' hints (a union gives several)."""
    hints = typing.get_type_hints(record)
    out = {}
    for f in fields(record):
        hint = hints[f.name]
        out[f.name] = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    return out


def coerce(name: str, value: Any, allowed: tuple, source: str, *, error: type[CbtoolError] = ConfigError,
           where: str = "setting") -> Any:
    """`value` as the first allowed type it fits; TOML/JSON lists become tuples for `tuple[str, ...]` hints."""
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return int(value) if int in allowed and value.isdigit() else value
        if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(kind)[0]
            if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                return tuple(value)
    wanted = " or ".join(_type_name(k) for k in allowed)
    raise error(f"{source}: {where} '{name}' must be {wanted}, found {_describe(value)}")


def _type_name(kind) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a list of {typing.get_args(kind)[0].__name__}"
    return "none" if kind is type(None) else getattr(kind, "__name__", str(kind))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:120]
