"""A strict structural checker of JSON values against the vendors' own SDK types.

The SDKs' pydantic models allow extra keys (``extra="allow"``) and Deepgram's do not even
validate (``UncheckedBaseModel``); their request TypedDicts are not checked at run time at all.
So this walks the type annotations itself: a pydantic model or a TypedDict is an object whose
keys must all be declared (unknown keys are errors) and whose required keys must be present; a
``Literal`` must match exactly; a ``Union`` matches if any member does (the error reported is
the one of the member whose ``type`` literal matches, else the closest); lists, dicts and
scalars are checked by JSON kind. Types it does not know (files, ``Any``) accept anything.

Pure: no I/O. ``check(value, type_)`` returns a list of problems, empty when the value conforms.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import pydantic
import typing_extensions

__all__ = ["check", "type_literals"]

_NONE = type(None)


def check(value: Any, type_: Any, path: str = "$") -> list[str]:
    """Every way ``value`` (decoded JSON) departs from ``type_``; [] when it conforms."""
    return _check(value, type_, path)


def _strip(type_: Any) -> Any:
    while typing_extensions.get_origin(type_) is typing_extensions.Annotated:
        type_ = typing_extensions.get_args(type_)[0]
    return type_


def _check(value: Any, type_: Any, path: str) -> list[str]:
    type_ = _strip(type_)
    if type_ is Any or type_ is object or isinstance(type_, typing.TypeVar):
        return []
    origin = typing_extensions.get_origin(type_)
    args = typing_extensions.get_args(type_)
    if origin is typing.Union or origin is types.UnionType:
        return _union(value, args, path)
    if origin is typing_extensions.Literal or origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return []
        return [f"{path}: {value!r} is not one of {list(args)!r}"]
    if origin in (typing_extensions.Required, typing_extensions.NotRequired,
                  typing_extensions.ReadOnly):
        return _check(value, args[0], path)
    if isinstance(type_, type) and issubclass(type_, pydantic.BaseModel):
        return _model(value, type_, path)
    if typing_extensions.is_typeddict(type_):
        return _typeddict(value, type_, path)
    if origin is not None and isinstance(origin, type):
        if issubclass(origin, Mapping):
            if not isinstance(value, dict):
                return [f"{path}: expected an object, got {type(value).__name__}"]
            item = args[1] if len(args) == 2 else Any
            return [p for k, v in value.items() for p in _check(v, item, f"{path}.{k}")]
        if issubclass(origin, Iterable) and not issubclass(origin, str | bytes):
            if not isinstance(value, list):
                return [f"{path}: expected an array, got {type(value).__name__}"]
            item = args[0] if args else Any
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                return [p for i, (v, t) in enumerate(zip(value, args, strict=False))
                        for p in _check(v, t, f"{path}[{i}]")]
            return [p for i, v in enumerate(value) for p in _check(v, item, f"{path}[{i}]")]
    return _scalar(value, type_, path)


def _scalar(value: Any, type_: Any, path: str) -> list[str]:
    if type_ is _NONE or type_ is None:
        ok = value is None
    elif type_ is bool:
        ok = isinstance(value, bool)
    elif type_ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif type_ is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif type_ is str:
        ok = isinstance(value, str)
    elif isinstance(type_, type) and issubclass(type_, enum.Enum):
        ok = value in {m.value for m in type_}
    elif type_ in (dict, list):
        ok = isinstance(value, type_)
    else:
        return []  # files, datetimes, ...: not JSON values the checker knows
    return [] if ok else [f"{path}: {value!r} is not a {getattr(type_, '__name__', type_)}"]


def _union(value: Any, members: Sequence[Any], path: str) -> list[str]:
    # Fern (Deepgram) writes its enums open, ``Union[Literal[...], Any]``, for forward
    # compatibility; a client and a mock must stick to the documented values, so the Any goes.
    closed = [m for m in members if _strip(m) is not Any]
    if len(closed) < len(members) and all(
            typing_extensions.get_origin(_strip(m)) in (typing.Literal, typing_extensions.Literal)
            for m in closed) and closed:
        members = closed
    results = []
    for member in members:
        problems = _check(value, member, path)
        if not problems:
            return []
        results.append((member, problems))
    if isinstance(value, dict) and "type" in value:
        for member, problems in results:
            if value["type"] in type_literals(_strip(member)):
                return problems
    return min(results, key=lambda r: len(r[1]))[1]


def _fields(type_: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """(key -> annotation, required keys) of a pydantic model or TypedDict, by wire name."""
    return _fields_cached(type_)


@cache
def _fields_cached(type_: Any) -> tuple[dict[str, Any], frozenset[str]]:
    if issubclass(type_, pydantic.BaseModel):
        keys: dict[str, Any] = {}
        required = set()
        for name, info in type_.model_fields.items():
            key = info.alias or name
            keys[key] = info.annotation if not info.metadata else typing_extensions.Annotated[
                info.annotation, *info.metadata]
            if info.is_required():
                required.add(key)
        return keys, frozenset(required)
    hints = typing_extensions.get_type_hints(type_, include_extras=True)
    keys = {}
    required = set()
    for name, hint in hints.items():
        key = name
        if typing_extensions.get_origin(hint) is typing_extensions.Annotated:
            for meta in typing_extensions.get_args(hint)[1:]:
                alias = getattr(meta, "alias", None)
                if isinstance(alias, str):
                    key = alias
        keys[key] = hint
        # With ``from __future__ import annotations`` (the SDKs use it) Python 3.11 cannot see
        # Required / NotRequired inside the string annotations, so __required_keys__ is wrong
        # for them; read the resolved hint.
        marker = _marker(hint)
        if marker is typing_extensions.Required or (
                marker is not typing_extensions.NotRequired and name in type_.__required_keys__):
            required.add(key)
    return keys, frozenset(required)


def _marker(hint: Any) -> Any:
    while True:
        origin = typing_extensions.get_origin(hint)
        if origin is typing_extensions.Annotated:
            hint = typing_extensions.get_args(hint)[0]
        elif origin in (typing_extensions.Required, typing_extensions.NotRequired):
            return origin
        elif origin is typing_extensions.ReadOnly:
            hint = typing_extensions.get_args(hint)[0]
        else:
            return None


def _model(value: Any, type_: Any, path: str) -> list[str]:
    return _object(value, type_, path)


def _typeddict(value: Any, type_: Any, path: str) -> list[str]:
    return _object(value, type_, path)


def _object(value: Any, type_: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_.__name__}), got {type(value).__name__}"]
    keys, required = _fields(type_)
    problems = [f"{path}: unknown key {k!r} (not in {type_.__name__})"
                for k in value if k not in keys]
    problems += [f"{path}: missing required key {k!r} of {type_.__name__}"
                 for k in sorted(required) if k not in value]
    for k, v in value.items():
        if k in keys:
            problems += _check(v, keys[k], f"{path}.{k}")
    return problems


def type_literals(type_: Any) -> tuple[Any, ...]:
    """The literal values the ``type`` key of a model / TypedDict may take (() if none)."""
    type_ = _strip(type_)
    if not (isinstance(type_, type) and (issubclass(type_, pydantic.BaseModel)
                                         or typing_extensions.is_typeddict(type_))):
        return ()
    hint = _fields(type_)[0].get("type")
    return _literals(hint) if hint is not None else ()


def _literals(hint: Any) -> tuple[Any, ...]:
    hint = _strip(hint)
    origin = typing_extensions.get_origin(hint)
    if origin in (typing_extensions.Literal, typing.Literal):
        return typing_extensions.get_args(hint)
    if origin in (typing.Union, types.UnionType, typing_extensions.Required,
                  typing_extensions.NotRequired):
        return tuple(v for a in typing_extensions.get_args(hint) for v in _literals(a))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return tuple(m.value for m in hint)
    return ()
