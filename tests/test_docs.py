"""The documentation holds together: a short README that reaches every page in one click, links
and anchors that resolve, generated pages that are current, and Python examples that name real code."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

#: every section of the README before it was cut to a map: (page it moved to, its heading there)
MOVED = {
    "Configs": ("configs.md", "Configs and presets"),
    "The Recording": ("data.md", "The Recording"),
    "Formats (sources)": ("data.md", "Formats (sources)"),
    "On-disk store": ("data.md", "On-disk store"),
    "Adding a dataset": ("architecture.md", "Adding a source (a dataset)"),
    "The fly visual system simulator": ("simulator.md", "The fly visual system simulator"),
    "Task-training the network": ("simulator.md", "Task-training the network (`neurocast fly train-task`)"),
    "How realistic is a network?": ("simulator.md", "How realistic is a network? (`neurocast fly diagnose`)"),
    "Latent dynamics": ("latent.md", "Latent dynamics (task: latent)"),
    "Coming from LatentEvolution": ("latent.md", "Coming from LatentEvolution (the seed)"),
    "Roll-outs, analysis and early stopping": ("latent.md", "Roll-outs, analysis and early stopping"),
    "How to read the figures": ("latent.md", "How to read the figures"),
    "Multi-session forecasting": ("forecasting.md", "Multi-session forecasting (task: forecast)"),
    "Test-time adaptation": ("forecasting.md", "Test-time adaptation"),
    "Sweeps and clusters": ("clusters.md", "Sweeps, clusters and tracking"),
    "Running on a cluster": ("clusters.md", "Running on a cluster"),
    "Tracking": ("clusters.md", "Tracking"),
    "Nothing lost, nothing corrupted": ("reliability.md", "Nothing lost, nothing corrupted"),
    "Adding a model": ("architecture.md", "Adding a model"),
    "Benchmarks": ("benchmarks.md", "Benchmarks"),
    "Development": ("architecture.md", "Development"),
}


def headings(text: str) -> list[str]:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"^#{1,6} (.+)$", line)):
            out.append(m.group(1).strip())
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return s.replace(" ", "-")


def links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_is_short_and_reaches_every_page_in_one_click():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 12_000, f"README.md is {len(readme.encode())} bytes: move detail into docs/"
    linked = {Path(target.split("#")[0]).name for target in links(readme) if target.startswith("docs/")}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
    for old, (page, heading) in MOVED.items():
        assert page in linked, old
        assert heading in headings((DOCS / page).read_text()), f"{old!r} is not in docs/{page} as {heading!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_anchors_resolve(page):
    for target in links(page.read_text()):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = page if not path else (page.parent / path)
        assert dest.exists(), f"{page.name}: link to {target} ({dest} does not exist)"
        if anchor and dest.suffix == ".md":
            anchors = {slug(h) for h in headings(dest.read_text())}
            assert anchor in anchors, f"{page.name}: no heading #{anchor} in {dest.name}"


@pytest.mark.parametrize(("page", "script"), [("benchmarks.md", "render_docs"), ("scaling.md", "scaling")])
def test_generated_pages_match_the_current_results(page, script):
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module(script)
    finally:
        sys.path.pop(0)
    assert (DOCS / page).read_text() == module.render(), \
        f"docs/{page} is stale: run `python benchmarks/{script}.py` (or `make docs`)"
    if script == "scaling":
        assert "N^" in module.render() and "units^" in module.render()  # the fitted exponents are there


@pytest.mark.parametrize("page", [ROOT / "README.md", DOCS / "python_api.md"], ids=lambda p: p.name)
def test_python_examples_compile_and_import_real_names(page):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks
    for code in blocks:
        tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neurocast"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{page.name}: {node.module} has no {alias.name}"
