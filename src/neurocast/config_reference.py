"""A Markdown reference of every config field, generated from the pydantic schemas.

`neurocast config reference [TASK]` prints it; docs/CONFIG.md is this output (a test
keeps the file in step with the code).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from neurocast.config import _dict_value, _is_list, _list_item, _models_in, _strip
from neurocast.tasks import TASKS, task_schema


def _type_name(annotation: Any) -> str:
    ann = _strip(annotation)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(ann))
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return "section"
        return ann.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    for mod in ("neurocast.schema.latent.", "neurocast.schema.simulation.", "neurocast.schema.stimuli.",
                "neurocast.schema.common.", "neurocast.schema.forecast."):
        text = text.replace(mod, "")
    return text.replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    text = repr(value)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}...`"


def _rows(model: type[BaseModel], prefix: str, out: list[str], seen: set) -> None:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models = _models_in(field.annotation)
        desc = (field.description or "").replace("|", "\\|")
        dict_models = _models_in(_dict_value(field.annotation)) if _dict_value(field.annotation) is not None else []
        list_models = _models_in(_list_item(field.annotation)) if _is_list(field.annotation) else []
        if dict_models:
            out.append(f"| `{path}` | mapping name -> section | {_default(field)} | {desc} |")
            _rows(dict_models[0], path + ".<name>.", out, seen)
        elif list_models:
            out.append(f"| `{path}` | list of sections | {_default(field)} | {desc} |")
            _rows(list_models[0], path + ".<i>.", out, seen)
        elif models and len(models) == 1:
            out.append(f"| `{path}` | section | | {desc} |")
            _rows(models[0], path + ".", out, seen)
        elif models:
            tags = []
            for m in models:
                tag = m.model_fields.get("mode") or m.model_fields.get("kind")
                tags.append(repr(tag.default) if tag is not None else m.__name__)
            out.append(f"| `{path}` | one of {', '.join(tags)} | {_default(field)} | {desc} (choose with "
                       f"`{path}.mode`) |")
            for m in models:
                _rows(m, path + ".", out, seen)
        else:
            row = f"| `{path}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |"
            if row not in seen:
                seen.add(row)
                out.append(row)


def reference(task: str | None = None) -> str:
    tasks = [task] if task else sorted(TASKS)
    parts = ["# Config reference", "",
             "Generated from the code by `neurocast config reference`. Every key can be set in YAML or on "
             "the command line as `--path.to.key value` (hyphens or underscores). Unknown keys are errors.", ""]
    for t in tasks:
        schema = task_schema(t)
        parts += [f"## task: {t}", "", (schema.__doc__ or "").strip().splitlines()[0] if schema.__doc__ else "", "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        rows: list[str] = []
        _rows(schema, "", rows, set())
        parts += rows + [""]
    return "\n".join(parts)
