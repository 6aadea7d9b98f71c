"""Imports point down: each module imports only its own layer and the layers below it.

The layers and what each may import are the table in docs/architecture.md (read here, so the
documentation and the check cannot drift apart). Every ``import`` statement counts, including
those inside functions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[str, list[str], set[str]]]:
    """(layer, module patterns, layers it may import), top layer first."""
    block = DOC.read_text().split("<!-- layers", 1)[1].split("<!-- /layers -->", 1)[0]
    rows = []
    for line in block.splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] == "layer" or not cells[0].strip("-"):
            continue
        name, modules, allowed = cells
        rows.append((name, re.findall(r"`([^`]+)`", modules), {a.strip() for a in allowed.split(",") if a.strip()}))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "neurocast").rglob("*.py"))}


def layer_of(module: str, table) -> str | None:
    for name, patterns, _ in table:
        for pat in patterns:
            if module == pat or (pat.endswith(".*") and module.startswith(pat[:-1])):
                return name
    return None


def imports_of(module: str, source: str, known: set[str]) -> set[str]:
    """neurocast modules that ``source`` (the text of ``module``) imports, anywhere in it."""
    package = module if module in known and _is_package(module, known) else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from neurocast.report import figures` imports the module figures
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return {m for m in out if m == "neurocast" or m.startswith("neurocast.")}


def _is_package(module: str, known: set[str]) -> bool:
    return any(k.startswith(module + ".") for k in known)


def violations(table, sources: dict[str, str], known: set[str]) -> list[str]:
    allowed = {name: ok | {name} for name, _, ok in table}
    out = []
    for module, text in sorted(sources.items()):
        here = layer_of(module, table)
        for target in sorted(imports_of(module, text, known)):
            there = layer_of(target, table)
            if there is not None and there not in allowed[here]:
                out.append(f"{module} ({here}) imports {target} ({there})")
    return out


def test_every_module_belongs_to_a_layer():
    table = layer_table()
    assert [name for name, _, _ in table][0] == "cli" and table[-1][0] == "core"
    missing = [m for m in modules() if layer_of(m, table) is None]
    assert not missing, f"modules that no row of docs/architecture.md covers: {missing}"


def test_the_table_only_points_down():
    table = layer_table()
    names = [name for name, _, _ in table]
    for i, (name, _, ok) in enumerate(table):
        assert ok <= set(names[i + 1 :]), f"layer {name} may import {sorted(ok - set(names[i + 1:]))}, not below it"


def test_imports_point_down():
    table = layer_table()
    mods = modules()
    found = violations(table, {m: p.read_text() for m, p in mods.items()}, set(mods))
    assert not found, "imports that run back up (see docs/architecture.md):\n" + "\n".join(found)


def test_the_check_sees_a_backward_import_inside_a_function():
    table = layer_table()
    known = set(modules()) | {"neurocast.eval.fake"}
    text = ("import numpy\n\ndef f():\n    from neurocast.pipelines.common import dataset_from_config\n"
            "    from ..data import Recording\n")
    found = violations(table, {"neurocast.eval.fake": text}, known)
    assert found == ["neurocast.eval.fake (eval) imports neurocast.pipelines.common (pipelines)"]
