"""Experiment configuration: JSON -> defaults -> ``--set`` overrides -> validation -> a frozen Settings.

Every key is declared once, with its default, in ``configs/schema.json`` (docs/configuration.md is generated
from it). Malformed JSON, unknown keys, wrong types and out-of-range values are one-sentence ConfigErrors
here; the names and rules of each layer are checked where it is assembled (the agents' ``check_config``).
"""
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from utils.errors import ConfigError, closest

REQUIRED = object()
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "schema.json")
DOCS = "docs/configuration.md"       # the key reference, generated from the schema (tools/config_docs.py)


@dataclass(frozen=True)
class Option:
    name: str
    type: str            # 'int' | 'float' | 'str' | 'bool' | 'dict' | 'list[int]' | 'list[float]' | 'list[str]'
    help: str
    section: str
    default: Any = REQUIRED
    choices: tuple = None    # the allowed values (of each item, for a list)
    min: float = None        # inclusive lower bound
    max: float = None        # inclusive upper bound
    nullable: bool = False
    derived_from: str = None  # the key this one is derived from when that is set; giving both is refused


def load_schema(path: str = SCHEMA_PATH) -> Tuple[Dict[str, str], List[Option]]:
    """``configs/schema.json``: ({section name: title}, every Option in the file's order)."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    titles, options = {}, []
    for section in doc["sections"]:
        titles[section["name"]] = section["title"]
        for key in section["keys"]:
            key = dict(key, section=section["name"], choices=tuple(key.get("choices") or ()) or None)
            default = REQUIRED if key.pop("required", False) else key.pop("default")
            options.append(Option(default=default, **key))
    return titles, options


SECTIONS, SCHEMA = load_schema()
SCHEMA_BY_NAME = {o.name: o for o in SCHEMA}
MODES = SCHEMA_BY_NAME["mode"].choices
LR_STEPS = SCHEMA_BY_NAME["lr_step"].choices     # when the lr changes: per optimizer step or per epoch


def defaults():
    return {o.name: _copy(o.default) for o in SCHEMA if o.default is not REQUIRED}


def _copy(value):
    return json.loads(json.dumps(value))


def read_json(path):
    """Read a JSON config file; malformed JSON names the file, line and column."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist; pass the path to a JSON file such as "
                          f"configs/cdnv2_exp_0.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot read config file {path!r}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object of keys and values, not a {type(data).__name__}")
    return data


def parse_overrides(items):
    """``["a=1", "model_args.stages=[8,8,8]"]`` -> [(dotted key, value)]: JSON, else a plain string."""
    out, seen = [], {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value (e.g. --set max_epoch=1), got {item!r}")
        if key in seen:
            raise ConfigError(f"--set gives {key} twice ({seen[key]!r} and {item!r}); keep one of them")
        seen[key] = item
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((key, value))
    return out


def apply_overrides(data, overrides):
    for key, value in overrides:
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {key}: {part!r} is not a dictionary, so it has no key {parts[-1]!r}")
            node = node[part]
        node[parts[-1]] = value
    return data


_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict}


def _type_ok(kind, value):
    if kind.startswith("list["):
        return isinstance(value, list) and all(_type_ok(kind[5:-1], v) for v in value)
    return isinstance(value, _TYPES[kind]) and (kind == "bool" or not isinstance(value, bool))   # JSON true is no 1


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "dict": "a JSON object", "list[int]": "a list of integers", "list[float]": "a list of numbers",
               "list[str]": "a list of strings"}


def _non_finite(value, path):
    """(dotted path, value) of the first NaN or infinite number in ``value`` (JSON allows NaN/Infinity), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if isinstance(value, dict) else f"{path}[{k}]")
        if found:
            return found
    return None


def validate(data: dict, source: str = "config") -> dict:
    """Check keys, types, ranges and consistency; the complete config (defaults filled in) as a new dict."""
    for key in data:
        if key not in SCHEMA_BY_NAME:
            raise ConfigError(f"unknown key {key!r} in {source}{closest(key, SCHEMA_BY_NAME)}; "
                              f"see the key tables in {DOCS}")
        bad = _non_finite(data[key], key)
        if bad:
            raise ConfigError(f"{bad[0]} is {json.dumps(bad[1])} in {source}; every number must be finite")
    cfg = defaults()
    cfg.update(data)
    for o in SCHEMA:
        value = cfg.get(o.name, REQUIRED)
        if value is REQUIRED:
            raise ConfigError(f"{source} is missing the required key {o.name!r} ({o.help})")
        if value is None:
            if not o.nullable:
                raise ConfigError(f"key {o.name!r} must be {_TYPE_WORDS[o.type]}, not null")
            continue
        if not _type_ok(o.type, value):
            raise ConfigError(f"key {o.name!r} must be {_TYPE_WORDS[o.type]}, got {json.dumps(value)} ({type(value).__name__})")
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if o.choices and v not in o.choices]
        if bad and isinstance(value, list):
            raise ConfigError(f"{o.name} may hold {', '.join(o.choices)}, not {bad[0]!r}"
                              f"{closest(bad[0], o.choices)}")
        if bad:
            raise ConfigError(f"key {o.name!r} must be one of {', '.join(map(str, o.choices))}; "
                              f"got {value!r}{closest(value, o.choices)}")
        for v in values if o.type in ("int", "float", "list[int]", "list[float]") else []:
            if o.min is not None and v < o.min:
                raise ConfigError(f"key {o.name!r} must be >= {o.min}, got {v}")
            if o.max is not None and v > o.max:
                raise ConfigError(f"key {o.name!r} must be <= {o.max}, got {v}")
    derived = [o.name for o in SCHEMA if o.derived_from and o.name in data and cfg[o.derived_from] is not None]
    if derived:
        key, names = SCHEMA_BY_NAME[derived[0]].derived_from, " and ".join(derived)
        raise ConfigError(f"{key} derives {names}; set either {key} or {names}, not both")
    # the run mechanics; the rules of each layer are its agent's check_config (agents/)
    name = cfg["exp_name"]
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise ConfigError(f"exp_name must be a plain folder name (no '/', no '..'), got {name!r}; put the parent "
                          f"folder into exp_root instead")
    if cfg["amp"] == "fp16" and cfg["device"] == "cpu" and cfg["mode"] == "train":
        raise ConfigError("amp 'fp16' needs a CUDA device; use amp 'bf16' or 'none' on the CPU")
    if cfg["resume"] and not cfg["auto_resume"]:
        raise ConfigError("resume names a checkpoint but auto_resume is false; drop one of the two")
    dev = cfg["device"]
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    return cfg


class Settings(Mapping):
    """A resolved config, read-only, by key or attribute (lists and dicts are handed out as copies);
    ``settings.replace(**kw)`` is a changed copy and ``dict(settings)`` a plain one."""
    __slots__ = ("_values",)

    def __init__(self, values: Mapping):
        object.__setattr__(self, "_values", _copy(dict(values)))

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        return _copy(value) if isinstance(value, (dict, list)) else value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key not in self._values:
            raise AttributeError(f"the config has no key {key!r}")
        return self[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, key, *value):
        raise TypeError(f"the resolved config is read-only; settings.replace({key}=...) returns a changed copy")

    __setitem__ = __delattr__ = __delitem__ = __setattr__

    def __reduce__(self):
        return Settings, (self._values,)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"

    def replace(self, **changes) -> "Settings":
        unknown = sorted(set(changes) - set(self._values))
        if unknown:
            raise KeyError(f"the config has no key {unknown[0]!r}")
        return Settings({**self._values, **changes})


def resolve(data: dict, source: str = "config") -> Settings:
    """The complete, checked config of ``data`` (a config file's keys, or a partial dict of the Python API
    and tests, which still names the required keys), defaults filled in."""
    return Settings(validate(data, source))


def load_config(path: str, overrides=(), mode: Optional[str] = None) -> Settings:
    """Read ``path``, apply ``--set`` overrides and ``--mode``; :func:`resolve` the result."""
    data = apply_overrides(read_json(path), parse_overrides(overrides))
    if mode is not None:
        data["mode"] = mode
    return resolve(data, source=path)
