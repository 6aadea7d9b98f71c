"""Plain-text and Markdown tables, and the mean ± 95% interval entries of results over seeds."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width text table (columns left-aligned, two spaces apart)."""
    cols = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cols]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def fmt(x, digits: int = 4) -> str:
    """Compact number formatting for tables (None -> '-')."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if xf != xf:
        return "nan"
    if xf == 0 or 1e-3 <= abs(xf) < 1e5:
        return f"{xf:.{digits}g}"
    return f"{xf:.{max(1, digits - 1)}e}"


def interval(values, keep_values: bool = False) -> dict:
    """Mean and half-width of the 95% interval over seeds (or sessions) of a metric, as a table entry:
    ``{"mean", "ci95"}`` (+ ``"values"`` with ``keep_values``); None and NaN values are left out
    (:func:`neurocast.eval.metrics.mean_ci95`: Student's t, half-width 0 for one value)."""
    from neurocast.eval.metrics import mean_ci95

    m, h = mean_ci95(values)
    return {"mean": m, "ci95": h, **({"values": list(values)} if keep_values else {})}


def fmt_interval(entry: dict | None, decimals: int | None = None, signed: bool = False) -> str:
    """``"mean ± half-width"`` of an :func:`interval` entry ('-' when it has no mean): compact
    numbers (:func:`fmt`) by default, else ``decimals`` fixed decimals (``signed``: with the mean's sign)."""
    if not entry or entry.get("mean") is None:
        return "-"
    if decimals is None:
        return f"{fmt(entry['mean'])} ± {fmt(entry['ci95'], 2)}"
    return f"{entry['mean']:{'+' if signed else ''}.{decimals}f} ± {entry['ci95']:.{decimals}f}"
