"""YAML -> typed dataclasses, with `dotted.key=value` overrides.

Every stage declares its config as nested `@dataclass`es. `load_config(StageConfig, path, overrides)`:
  1. reads the YAML mapping (a missing file or a non-mapping fails by name);
  2. applies each override `a.b.c=value` (the value parsed as YAML, so `1e-5`, `true`, `[q_proj]` work),
     checking every key against the schema first so a typo names the override that carried it;
  3. converts the nested mapping into the dataclasses, checking each value's type; unknown keys fail
     with the key, the file and the valid names (plus a "did you mean").
A field typed `dict` (e.g. `trainer:`) is taken verbatim: it is handed to a TRL config class whose own
validation then applies.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rlhf.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans and floats. PyYAML's 1.1 rules turn `no`, `off`, `yes`, `on` into booleans (which
    breaks `save_strategy: no`) and leave `1e-5` a string."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(  # YAML 1.2 also reads `1e-5` (no dot) as a number
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric range (None always passes): the one way a valid range is stated, for our fields (`bounded`)
    and for the TRL options we check at load (`rlhf.train.args`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        ops = (">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)
        return " and ".join(f"{op} {v}" for op, v in ops if v is not None)

    def holds(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def check(self, value: Any, key: str, src: str = "") -> None:
        """ConfigError naming the key, the valid range and the value, when a number (or a number in a list)
        falls outside."""
        if isinstance(value, list | tuple):
            for v in value:
                self.check(v, key, src)
            return
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        if not self.holds(value):
            where = f"{src}: " if src else ""
            raise ConfigError(f"{where}'{key}' must be {self.describe()}, got {value}.")


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    help: str = "",  # noqa: A002 - the name TRL's fields use (metadata={"help": ...})
    operational: bool = False,
):
    """A numeric config field with its valid range and its meaning, checked at config load (None always
    passes; a list is checked number by number): `max_failed_logins: int = bounded(5, ge=1, help=...)`.
    `operational`: how the run is carried out, not what it computes (see `operational_keys`)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"range": Range(ge, gt, le, lt), "help": help, "operational": operational},
    )


def documented(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002
    default_factory: Any = dataclasses.MISSING,
    operational: bool = False,
):
    """A config field that is not a number with a range, with its meaning: `documented("merged", help=...)`.
    `operational`: how the run is carried out, not what it computes (see `operational_keys`)."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"help": help, "operational": operational}
    )


def operational_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted keys of `cls`'s operational fields (e.g. `generation.url`: which engine answers, not what it
    answers): a run whose config differs only there is the same run (skipped by the loop, resumable)."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("operational"):
            out.add(prefix + f.name)
        sub = _dataclass_in(hints[f.name])
        if sub is not None:
            out |= operational_keys(sub, f"{prefix}{f.name}.")
    return out


def field_help(cls: type, name: str) -> str:
    """The help text a config field declares ('' when none)."""
    return next((f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name), "")


def check_bounds(f: dataclasses.Field, value: Any, key: str, src: str) -> None:
    rng = f.metadata.get("range")
    if rng is not None:
        rng.check(value, key, src)


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_config(cls: type, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()):
    """Read `path` (YAML) into `cls`, after applying `key.sub=value` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(path)
        if not p.is_file():
            raise ConfigError(f"config file '{path}' not found. Pass an existing YAML file with --config.")
        try:
            loaded = read_yaml(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start}); pass a "
                "YAML config file."
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}."
            )
        raw = loaded
    override_sources: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        _check_key_path(cls, key.split("."), f"override '{item}'")
        _set_dotted(raw, key.split("."), value, f"override '{item}'")
        override_sources[key] = f"override '{item}'"
    return from_dict(cls, raw, source=source, override_sources=override_sources)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"override '{item}' is not of the form key.sub=value (e.g. trainer.learning_rate=1e-5)."
        )
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' has an empty key; write it as key.sub=value.")
    try:
        value = read_yaml(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': the value is not valid YAML: {e}") from None
    return key, value


def from_dict(
    cls: type,
    data: Any,
    *,
    source: str = "config",
    override_sources: dict | None = None,
    prefix: str = "",
    base: Any = None,
):
    """Build dataclass `cls` from a mapping, checking keys and types. Keys the mapping leaves out keep their
    value in `base` (an instance), else the field's default: a section given in part (`run.seed=3`, or
    `sampling: {max_new_tokens: 64}`) keeps the rest of the enclosing default (the stage's run name, its
    sampling temperature), at every depth."""
    override_sources = override_sources or {}
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where}' must be a mapping of keys, got {_show(data)}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        src = override_sources.get(prefix + str(key), source)
        raise ConfigError(f"{src}: unknown key '{prefix}{key}'. {_valid_keys(cls, prefix, str(key))}")
    kwargs = {}
    for name, value in data.items():
        full = prefix + name
        src = _source_for(full, override_sources, source)
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        kwargs[name] = _convert(hints[name], value, full, src, override_sources, source, default)
        check_bounds(fields[name], kwargs[name], full, src)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain YAML-able data (enums as their values)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# ----------------------------------------------------------------------------------------------------------


def _source_for(key: str, override_sources: dict[str, str], default: str) -> str:
    # An override of `a.b` also covers `a.b.c`.
    for k, src in override_sources.items():
        if key == k or key.startswith(k + "."):
            return src
    return default


def _valid_keys(cls: type, prefix: str, wrong: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    under = f" under '{prefix.rstrip('.')}'" if prefix else ""
    msg = f"Valid keys{under}: {', '.join(names)}."
    close = difflib.get_close_matches(wrong, names, n=1)
    if close:
        msg += f" Did you mean '{close[0]}'?"
    return msg


def _check_key_path(cls: type, parts: list[str], src: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    head = parts[0]
    if head not in fields:
        raise ConfigError(f"{src}: unknown key '{prefix}{head}'. {_valid_keys(cls, prefix, head)}")
    if len(parts) == 1:
        return
    sub = _dataclass_in(hints[head])
    if sub is not None:
        _check_key_path(sub, parts[1:], src, prefix + head + ".")
    elif not _is_mapping_type(hints[head]):
        raise ConfigError(f"{src}: '{prefix}{head}' is a single value, it has no sub-key '{parts[1]}'.")


def _set_dotted(raw: dict, parts: list[str], value: Any, src: str) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{src}: '{'.'.join(parts[: i + 1])}' is not a mapping in the config file.")
        node = nxt
    node[parts[-1]] = value


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_mapping_type(tp: Any) -> bool:
    if tp is Any or tp is dict or typing.get_origin(tp) is dict:
        return True
    return any(_is_mapping_type(a) for a in typing.get_args(tp) if a is not type(None))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default value, where it is a dataclass instance (the base a partial section fills in)."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = None if f.default is dataclasses.MISSING else f.default
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def _convert(
    tp: Any, value: Any, key: str, src: str, override_sources: dict, source: str, base: Any = None
) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{src}: '{key}' must not be empty.")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, src, override_sources, source, base)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{src}: '{key}' must be {names}, got {_show(value)}.")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        base = base if isinstance(base, tp) else None
        return from_dict(
            tp, value, source=source, override_sources=override_sources, prefix=key + ".", base=base
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [m.value for m in tp]
        if value in choices:
            return tp(value)
        raise ConfigError(f"{src}: '{key}' must be one of {', '.join(map(str, choices))}; got {value!r}.")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{src}: '{key}' must be one of {', '.join(map(str, choices))}; got {value!r}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{src}: '{key}' must be true or false, got {_show(value)}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{src}: '{key}' must be an integer, got {_show(value)}.")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{src}: '{key}' must be a number, got {_show(value)}.")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{src}: '{key}' must be a string, got {_show(value)}.")
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: '{key}' must be a mapping of keys, got {_show(value)}.")
        return dict(value)
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{src}: '{key}' must be a list, got {_show(value)}.")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [
            _convert(item_tp, v, f"{key}[{i}]", src, override_sources, source) for i, v in enumerate(value)
        ]
    raise TypeError(f"config type {tp!r} of '{key}' is not supported")  # a bug in a stage's schema


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a list"
    if typing.get_origin(tp) is dict or tp is dict:
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )
