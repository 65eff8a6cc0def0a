"""JSON <-> frozen dataclasses, driven by the type hints; errors name the file and the key.

`encode(value)` turns a record (a dataclass) into plain JSON data: fields in declaration order,
enums as their values, tuples as lists. `decode(cls, data, path)` reads it back: every field
with no default must be present, each value must have the hinted type (an int is a float; for a
plain `float` field null reads as NaN, since `save_json` writes NaN as null), and unknown extra
keys are ignored. A record can reshape its JSON with two optional hooks:
`_json_in(data) -> data` (classmethod, before decoding) and `_json_out(self, data) -> data`.

Supported hints: str, int, float, bool, Any, X | None, tuple[X, ...], list[X], dict[str, X] /
Mapping[str, X], StrEnum subclasses and nested records.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

from wildcircuits.errors import WildcircuitsError


class ResultFileError(WildcircuitsError):
    """A result file that does not parse into its type; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class KeyPath:
    """Where a value sits: the file, the key path inside it (`curves[2].cpr`), a rebuild hint."""

    file: str
    key: str = ""
    hint: str = ""

    def child(self, key: str | int) -> KeyPath:
        part = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.key else key)
        return dataclasses.replace(self, key=self.key + part)

    def fail(self, problem: str) -> typing.NoReturn:
        where = f"key {self.key!r}" if self.key else "top level"
        hint = f"; {self.hint}" if self.hint else ""
        raise ResultFileError(f"{self.file}: {where}: {problem}{hint}")


def encode(value: Any) -> Any:
    """A record / enum / container as plain JSON data (NaN stays; `save_json` writes null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        out = getattr(value, "_json_out", None)
        return out(data) if out is not None else data
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a record."""
    return typing.get_type_hints(cls)


def decode(cls: type, data: Any, path: KeyPath) -> Any:
    """Read `data` as a `cls` record; `path` names the file and key for errors."""
    if not isinstance(data, Mapping):
        path.fail(f"expected a JSON object, got {_kind(data)}")
    hook = getattr(cls, "_json_in", None)
    if hook is not None:
        data = hook(data)
    types_ = hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = decode_value(types_[f.name], data[f.name], path.child(f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            path.child(f.name).fail("missing")
    try:
        return cls(**values)
    except WildcircuitsError as error:
        path.fail(str(error))


def decode_value(hint: Any, value: Any, path: KeyPath) -> Any:
    """One value of type `hint` (see the module docstring for the supported hints)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return decode_value(inner, value, path)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            path.fail(f"expected a list, got {_kind(value)}")
        items = [decode_value(args[0], v, path.child(i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            path.fail(f"expected a JSON object, got {_kind(value)}")
        inner = args[1] if args else Any
        return {str(k): decode_value(inner, v, path.child(str(k))) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode(hint, value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            path.fail(f"{value!r} is not one of {[m.value for m in hint]}")
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: Any, path: KeyPath) -> Any:
    if hint is float:
        if value is None:
            return float("nan")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        path.fail(f"expected a number, got {_kind(value)}")
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    path.fail(f"expected {getattr(hint, '__name__', hint)}, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
