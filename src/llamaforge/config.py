"""Typed configs: dataclass sections, set by a TOML file and `--section.key=value` overrides.

A recipe's config is a dataclass whose fields are section dataclasses. `load_config` reads the
TOML file, applies overrides (both `--a.b=v` and `--a.b v`), checks types, rejects unknown keys
with the list of valid ones, and `dump_toml` writes the resolved config beside every output.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from llamaforge.errors import UserError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a TOML or command-line value to the declared type, or raise naming `where`."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{where}: bad value {value!r}")
    if typ is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(typ):
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a table, got {value!r}")
        return from_dict(typ, value, where)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if typ is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        prefix = f"{where}." if where else ""
        raise UserError(
            f"unknown key {prefix}{unknown[0]!s}; valid keys{' in [' + where + ']' if where else ''}: "
            f"{', '.join(sorted(types_))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, types_[name], f"{where}.{name}" if where else name)
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if callable(post):
        post()
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_overrides(args: list[str]) -> dict[str, str]:
    """`--a.b=v` and `--a.b v` into {"a.b": "v"}; anything else is an error naming it."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or "." not in a.split("=", 1)[0]:
            raise UserError(f"unexpected argument {a!r}; overrides look like --section.key=value")
        if "=" in a:
            k, v = a[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise UserError(f"{a} needs a value")
            k, v = a[2:], args[i + 1]
            i += 1
        out[k] = v
        i += 1
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    d = data
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise UserError(f"--{key}: {p} is not a section")
    d[parts[-1]] = value


def _load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} not found")
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: invalid TOML: {e}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> T:
    """Defaults <- TOML file <- overrides, type-checked into `cls`."""
    data: dict[str, Any] = _load_toml(path) if path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for k, v in (overrides or {}).items():
        _set_dotted(data, k, v)
    try:
        return from_dict(cls, data)
    except UserError as e:
        raise UserError(f"{path or 'config'}: {e}") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {v!r} to TOML")


def dump_toml(data: Any) -> str:
    """A small TOML writer for resolved configs (tables of scalars, lists and inline tables)."""
    data = to_dict(data)
    lines: list[str] = []

    def table(d: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name and (scalars or not subs):
            lines.append(f"[{name}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            table(v, f"{name}.{k}" if name else k)

    table(data, "")
    return "\n".join(lines).rstrip() + "\n"
