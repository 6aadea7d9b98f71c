"""Typed configs: pydantic v2 models loaded from YAML, changed by dotted CLI overrides.

* Every section derives from :class:`Section` (unknown keys are errors).
* :func:`load_config` reads a YAML file (with an optional ``base:`` file it extends),
  applies overrides such as ``--training.time-units 20`` and validates the result.
* Errors are :class:`~neurocast.errors.ConfigError` with one line naming the full path
  of the key, the closest valid name for unknown keys and the allowed range for values.

Override syntax (hyphens and underscores are interchangeable in keys, dictionary keys
included: ``--recordings.cv-natural.duration-s 5`` sets the existing ``cv_natural``)::

    --training.time-units 20           set a value
    --training.time_units=20           same
    --training.use-tf32                boolean flag -> true
    --training.no-use-tf32             boolean flag -> false
    --training.intermediate-loss-steps 3 4     list (also "3,4" or "[3, 4]")
    --data.cross-validation.0.name of  list element by index
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from neurocast.errors import ConfigError

# ---------------------------------------------------------------------------- base class


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ---------------------------------------------------------------------------- YAML


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from a file, following ``base:`` (a path relative to the file)."""
    return _read_yaml(Path(path), seen=())


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: 'base' files form a cycle")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: {describe_yaml_error(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        data = deep_merge(_read_yaml(base_path, seen + (path.resolve(),)), data)
    return data


def describe_yaml_error(exc: Exception) -> str:
    """'invalid YAML (line L, column C): problem' for a YAML parse error."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def to_yaml(model: BaseModel | Mapping[str, Any]) -> str:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else dict(model)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def config_hash(model: BaseModel | Mapping[str, Any], length: int = 6) -> str:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else dict(model)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


# ---------------------------------------------------------------------------- type helpers


def _strip(annotation: Any) -> Any:
    """Remove Annotated/Optional wrappers."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel classes an annotation may hold directly (through unions)."""
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if _is_union(annotation):
        out: list[type[BaseModel]] = []
        for a in typing.get_args(annotation):
            out.extend(_models_in(a))
        return out
    return []


def _is_list(annotation: Any) -> bool:
    annotation = _strip(annotation)
    return typing.get_origin(annotation) in (list, tuple, Sequence, set) or annotation in (list, tuple)


def _is_bool(annotation: Any) -> bool:
    return _strip(annotation) is bool


def _list_item(annotation: Any) -> Any:
    args = typing.get_args(_strip(annotation))
    return args[0] if args else Any


def _dict_value(annotation: Any) -> Any | None:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) in (dict, Mapping):
        args = typing.get_args(annotation)
        return args[1] if len(args) == 2 else Any
    return None


def _field_names(models: list[type[BaseModel]]) -> list[str]:
    names: list[str] = []
    for m in models:
        for n in m.model_fields:
            if n not in names:
                names.append(n)
    return names


def closest(name: str, options: Sequence[str]) -> str:
    """' (did you mean X?)' for the option closest to ``name``, else the list of options (or '')."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    if match:
        return f" (did you mean {match[0]!r}?)"
    return f" (valid keys: {', '.join(options)})" if options else ""


def norm_key(key: str) -> str:
    """A key as the schema spells it (hyphens written as underscores)."""
    return key.replace("-", "_")


# ---------------------------------------------------------------------------- overrides


def parse_override_tokens(tokens: Sequence[str]) -> list[tuple[str, list[str], bool]]:
    """Split ``--a.b v1 v2 --c=v`` into (key, values, had_equals) triples."""
    out: list[tuple[str, list[str], bool]] = []
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2 and not _looks_numeric(tok):
            key, eq, value = tok[2:].partition("=")
            if not key:
                raise ConfigError(f"override {tok!r}: missing key")
            out.append((key, [value] if eq else [], bool(eq)))
        elif ":" in tok and not out and "/" not in tok:
            raise ConfigError(f"override {tok!r}: write it as --key value (e.g. --training.acquisition-mode.mode "
                              "time_aligned)")
        else:
            if not out:
                raise ConfigError(f"unexpected argument {tok!r}: overrides look like --section.key value")
            out[-1][1].append(tok)
    return out


def _looks_numeric(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def parse_scalar(text: str) -> Any:
    """A command-line value: YAML-like scalars, with 1e-4 style floats understood."""
    s = text.strip()
    low = s.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "none", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if s[:1] in "[{":
        try:
            return yaml.safe_load(s)
        except yaml.YAMLError:
            raise ConfigError(f"value {text!r} is not valid YAML") from None
    return s


def _resolve_key(schema: type[BaseModel], dotted: str,
                 dict_keys: dict[int, bool] | None = None) -> tuple[list[str | int], Any]:
    """Map a dotted CLI key to a data path, checking every component against the schema.

    Returns (path, annotation of the final field). A final ``no-<flag>`` is returned with
    the annotation ``Literal['__negated_bool__']``. ``dict_keys`` (if given) receives the
    positions of dictionary keys in the path -> whether that dictionary holds sections.
    """
    parts = [p for p in dotted.split(".")]
    if any(not p for p in parts):
        raise ConfigError(f"override --{dotted}: empty key component")
    models: list[type[BaseModel]] = [schema]
    annotation: Any = schema
    path: list[str | int] = []
    for i, raw in enumerate(parts):
        here = ".".join(str(p) for p in path) or "<top level>"
        if models:
            name = norm_key(raw)
            fields = {}
            for m in models:
                for n, f in m.model_fields.items():
                    fields.setdefault(n, f)
            if name not in fields:
                last = i == len(parts) - 1
                if last and name.startswith("no_") and name[3:] in fields and _is_bool(fields[name[3:]].annotation):
                    path.append(name[3:])
                    return path, Literal["__negated_bool__"]
                full = ".".join([*map(str, path), name])
                raise ConfigError(f"override --{dotted}: unknown config key {full!r}{closest(name, list(fields))}")
            path.append(name)
            annotation = fields[name].annotation
        elif _is_list(annotation):
            try:
                idx = int(raw)
            except ValueError:
                raise ConfigError(f"override --{dotted}: {here} is a list; use an index, got {raw!r}") from None
            path.append(idx)
            annotation = _list_item(annotation)
        elif _dict_value(annotation) is not None:
            path.append(raw)
            annotation = _dict_value(annotation)
            if dict_keys is not None:
                dict_keys[len(path) - 1] = bool(_models_in(annotation))
        else:
            raise ConfigError(f"override --{dotted}: {here} is a value, it has no key {raw!r}")
        models = _models_in(annotation)
    return path, annotation


def _match_dict_keys(data: Any, path: list[str | int], dict_keys: dict[int, bool], dotted: str) -> list[str | int]:
    """Dictionary keys of an override matched to the data's keys like field names are: exact,
    else with hyphens as underscores. A key that matches nothing would add an entry: fine
    in free-form dictionaries (optimizer_kwargs, ...; added with underscores), an error in
    dictionaries of sections (recordings, models), where it is almost always a typo."""
    out: list[str | int] = []
    node = data
    for i, key in enumerate(path):
        if i in dict_keys:
            existing = list(node) if isinstance(node, dict) else []
            match = next((k for k in (key, norm_key(str(key))) if k in existing), None)
            if match is None:
                match = next((k for k in existing if norm_key(str(k)) == norm_key(str(key))), None)
            if match is None:
                where = ".".join(str(p) for p in out)
                if dict_keys[i]:
                    listed = f"; its entries: {', '.join(map(str, existing))}" if existing else ""
                    raise ConfigError(f"override --{dotted}: {where} has no entry {key!r}"
                                      f"{closest(norm_key(str(key)), [str(k) for k in existing]) if existing else ''}"
                                      f"{listed} (add new entries in the config file)")
                match = norm_key(str(key))
            key = match
        out.append(key)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            node = None
    return out


def _set_path(data: dict[str, Any], path: list[str | int], value: Any, dotted: str) -> None:
    node: Any = data
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, dict):
            if not isinstance(node.get(key), (dict, list)):
                node[key] = [] if isinstance(nxt, int) else {}
            node = node[key]
        else:  # list
            if key >= len(node):
                if key != len(node):
                    raise ConfigError(f"override --{dotted}: list index {key} skips entries (list has {len(node)})")
                node.append([] if isinstance(nxt, int) else {})
            node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if last > len(node):
            raise ConfigError(f"override --{dotted}: list index {last} skips entries (list has {len(node)})")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    else:
        node[last] = value


def _value_for(annotation: Any, values: list[str], dotted: str, had_equals: bool) -> Any:
    if annotation == Literal["__negated_bool__"]:
        if values:
            raise ConfigError(f"override --{dotted} is a flag and takes no value")
        return False
    if not values:
        if _is_bool(annotation) and not had_equals:
            return True
        raise ConfigError(f"override --{dotted} needs a value")
    if _is_list(annotation):
        if len(values) == 1 and values[0].strip()[:1] == "[":
            return parse_scalar(values[0])
        items: list[Any] = []
        for v in values:
            items.extend(parse_scalar(p) for p in v.split(",") if p.strip() != "")
        return items
    if len(values) != 1:
        raise ConfigError(f"override --{dotted} takes one value, got {len(values)}: {' '.join(values)}")
    return parse_scalar(values[0])


def apply_overrides(
    data: Mapping[str, Any], tokens: Sequence[str], schema: type[BaseModel]
) -> dict[str, Any]:
    """A copy of ``data`` with every ``--dotted.key value`` override applied (schema-checked keys)."""
    out = json.loads(json.dumps(data, default=str)) if data else {}
    for dotted, values, had_equals in parse_override_tokens(tokens):
        dict_keys: dict[int, bool] = {}
        path, annotation = _resolve_key(schema, dotted, dict_keys)
        if dict_keys:
            path = _match_dict_keys(out, path, dict_keys, dotted)
        _set_path(out, path, _value_for(annotation, values, dotted, had_equals), dotted)
    return out


# ---------------------------------------------------------------------------- validation


def _field_at(
    schema: type[BaseModel], loc: Sequence[Any]
) -> tuple[list[type[BaseModel]], Any, list[Any]]:
    """Walk a validation-error location.

    Returns (models found at the end of loc, FieldInfo of its last key, loc without the
    union-member tags pydantic inserts).
    """
    models: list[type[BaseModel]] = [schema]
    annotation: Any = schema
    info = None
    clean: list[Any] = []
    for i, key in enumerate(loc):
        if models:
            found = next((m.model_fields[key] for m in models if isinstance(key, str) and key in m.model_fields), None)
            if found is None:
                if i == len(loc) - 1:
                    clean.append(key)  # the unknown key itself
                continue  # a union member's tag
            info, annotation = found, found.annotation
        elif _is_list(annotation) and isinstance(key, int):
            info, annotation = None, _list_item(annotation)
        elif _dict_value(annotation) is not None:
            info, annotation = None, _dict_value(annotation)
        else:
            clean.extend(loc[i:])
            break
        clean.append(key)
        models = _models_in(annotation)
    return models, info, clean


def allowed_values(info: Any) -> str:
    """Human description of a field's allowed values (range, choices), or ''."""
    if info is None:
        return ""
    parts: list[str] = []
    for meta in getattr(info, "metadata", []) or []:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(meta, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    ann = _strip(info.annotation)
    if typing.get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    return " and ".join(parts)


def _describe_error(schema: type[BaseModel], err: dict[str, Any]) -> str:
    loc = list(err.get("loc", ()))
    _, info, clean = _field_at(schema, loc)
    dotted = ".".join(str(p) for p in clean) or "<top level>"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        models, _, _ = _field_at(schema, loc[:-1])
        names = _field_names(models or [schema])
        return f"unknown config key {dotted!r}{closest(str(loc[-1]), names)}"
    msg = err.get("msg", "invalid value")
    if kind == "missing":
        return f"{dotted}: required key is missing"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    allowed = allowed_values(info)
    hint = f"; allowed: {allowed}" if allowed and allowed not in msg else ""
    return f"{dotted}: {msg}{shown}{hint}"


def validate(schema: type[BaseModel], data: Mapping[str, Any], origin: str = "config") -> BaseModel:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe_error(schema, errors[0])
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{origin}: {first}{more}") from None


def load_config(
    schema: type[BaseModel],
    source: str | os.PathLike | Mapping[str, Any],
    overrides: Sequence[str] = (),
) -> BaseModel:
    """Read (a YAML path or a mapping), apply overrides, validate into ``schema``."""
    if isinstance(source, Mapping):
        data, origin = dict(source), "config"
    else:
        data, origin = read_yaml(source), f"config {source}"
    data = apply_overrides(data, overrides, schema)
    return validate(schema, data, origin)
