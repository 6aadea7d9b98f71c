"""Write docs/benchmarks.md from the recorded results in benchmarks/results/ (``make docs``).

    python benchmarks/render_docs.py           # rewrite docs/benchmarks.md
    python benchmarks/render_docs.py --check   # exit 1 when docs/benchmarks.md is stale

Every number on that page comes from a results file written by a benchmark script (with its
machine and date); nothing here measures anything. A test checks that the page is current:
re-run this after a benchmark rewrites its results.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"

#: results pages written by the benchmarks, in the order shown; missing ones are listed as not yet measured
REPORTS = [
    ("fly_realism.md", "Fly visual system realism", "simulator.md#how-realistic-is-a-network-neurocast-fly-diagnose"),
    ("seed_findings.md", "The seed's findings at CPU scale", "latent.md#results"),
    ("poco.md", "POCO and the forecasting baselines", "forecasting.md#results"),
    ("ttt.md", "Test-time adaptation", "forecasting.md#results"),
]


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _when(d: dict | None) -> str:
    m = (d or {}).get("machine") or {}
    if not m:
        return "-"
    return f"{m.get('date', '?')}, {m.get('cpu_count', '?')} cores, {m.get('torch_threads', '?')} threads"


def _met(flag) -> str:
    return "" if flag is None else (" (met)" if flag else " (NOT met)")


def _simulate_rows() -> list[list[str]]:
    d = _load("simulate.json")
    if d is None:
        return []
    rows = {(r["extent"], r["channels"], r["noise_std"] > 0): r for r in d["rows"]}
    v = rows.get((8, "voltage", False))
    c = rows.get((8, "voltage+calcium", False))
    n = rows.get((8, "voltage", True))
    t = d.get("targets", {})
    out = []
    for r in d.get("step_rows", []):
        batched = r["batch"] > 1
        read = r["streamed_bytes"] + r["gathered_bytes"]
        out.append([f"`simulate.py`: one Euler step, extent {r['extent']} ({r['neurons']:,} cells, {r['edges']:,} "
                    f"synapses), {r['batch']} sequence{'s' if batched else ''}, {r['threads']} thread(s)",
                    f"{1e3 * r['folded_seconds_per_step_best']:.3f} ms: {r['ratio_to_bound']:.2f} of the load-port "
                    f"bound {1e3 * r['bound_seconds']:.3f} ms ({read / 2**20:.1f} MB read, "
                    f"{r['gathered_bytes'] / read:.0%} of it gathers, at the L1 read bandwidth "
                    f"{r['bandwidth_l1_GBps']:.0f} GB/s measured in the same run); the equation as written: "
                    f"{1e3 * r['reference_seconds_per_step_best']:.3f} ms, {r['reference_ratio_to_bound']:.2f}",
                    (">= 0.6 of the bound" + _met(r["ratio_to_bound"] >= 0.6)) if batched else "- (latency-bound)",
                    _when(d)])
    if v:
        out.append(["`simulate.py`: 10 s of extent-8 activity, one sequence",
                    f"{v['single_seconds_per_10s']:.3f} s",
                    "<= 0.4 s" + _met(t.get("extent8_single_10s_le_0.4s")), _when(d)])
        extra = "; ".join(f"{what}: {r['batched_speedup']:.1f}x{why}" for what, r, why in (
            ("calcium on", c, ""), ("process noise on", n, ", bound by drawing Gaussians")) if r)
        out.append([f"`simulate.py`: batched ({v['batch']} sequences) vs single, extent 8, voltage",
                    f"{v['batched_speedup']:.1f}x per sequence ({extra})",
                    ">= 3x" + _met(t.get("extent8_batched_ge_3x_single")), _when(d)])
    return out


def _train_latent_rows() -> list[list[str]]:
    d = _load("train_latent.json")
    if d is None:
        return []
    out = []
    met = d.get("targets", {}).get("extent8_mfu_ge_40pct")
    for r in d["rows"]:
        full = "extent 8" in r["name"]
        out.append([f"`train_latent.py`: tu=20, ems=5, {r['name']}, batch {r['batch']}",
                    f"{100 * r['mfu']:.0f}% of the measured fp32 matmul peak ({'' if full else 'small matrices; '}"
                    f"{r['samples_per_s']:,.0f} samples/s; peak {d['matmul_peak_gflops']:.0f} GFLOP/s)",
                    (">= 40%" + _met(met)) if full else "-", _when(d)])
    return out


def _store_rows() -> list[list[str]]:
    d = _load("store.json")
    if d is None:
        return []
    return [[f"`store.py`: {d['frames']:,} x {d['neurons']:,} float32 ({d['bytes'] / 1e9:.0f} GB) written in chunks, "
             "random 65,536-frame ranges read, everything read back and compared",
             f"written in {d['write_s']:.0f} s at {d['peak_rss_after_write_GB']:.2f} GB peak RSS; a 65,536-frame "
             f"range ({65536 * d['neurons'] * 4 / 1e9:.1f} GB) in {d['random_65536_frame_read_s_median']:.0f} s at "
             f"{d['peak_rss_after_random_reads_GB']:.2f} GB "
             f"peak; {'exact' if d['exact_round_trip'] else 'NOT an exact'} round trip",
             "fits in 24 GB", _when(d)]]


def _poco_rows() -> list[list[str]]:
    """The POCO step: per-size rows of results/poco_timing.json (fraction of the matmul peak
    measured in the same run), else the step time kept in results/poco.json."""
    d = _load("poco_timing.json")
    t = (d or {}).get("timing") or {}
    if t.get("rows"):
        when = f"{(d.get('machine') or {}).get('date', '?')}, {t['threads']} thread(s), load {t['load_1min']} " \
               f"on {t['cpu_count']} cores"
        def before(r):
            ref = (r.get("variants") or {}).get("reference")
            return (f"; the FiLM readout as one expression with glibc's default allocator: "
                    f"{ref['seconds_per_step_median']:.2f} s, {ref['fraction_of_matmul_peak']:.0%}") if ref else ""

        return [[f"`poco.py --timing-only`: POCO training step, {r['batch']} windows x {r['units']} units",
                 f"{r['seconds_per_step_median']:.2f} s, {r['flops_per_step'] / 1e9:.0f} GFLOP: "
                 f"{r['fraction_of_matmul_peak']:.0%} of the fp32 matmul peak ({t['matmul_peak_gflops']:.0f} GFLOP/s, "
                 f"measured in the same run){before(r)}",
                 f">= 50% of the peak{_met(r['fraction_of_matmul_peak'] >= 0.5)}", when] for r in t["rows"]]
    t = ((_load("poco.json") or {}).get("timing")) or {}
    if not t:
        return []
    return [[f"`poco.py`: POCO training step, {t['batch']} windows x {t['units']} units",
             f"{t['seconds_per_step_median']:.2f} s (median)", "-",
             f"{t.get('measured', '?')}, {t.get('threads', '?')} threads"]]


def _flyvis_rows() -> list[list[str]]:
    path = RESULTS / "flyvis_agreement.txt"
    if not path.exists():
        return []
    text = path.read_text()
    rows = [m.group(1).split() for m in re.finditer(r"neurocast vs flyvis((?:\s+[-+.\de]+){6})\s*$", text, re.M)]
    rel = [float(r[3]) for r in rows]  # columns: max|a-b|, max rel, (at |b|), rel/node, /resp., response
    extents = re.findall(r"=== extent (\d+) ===", text)
    params = [float(m.group(1)) for m in re.finditer(r"^(?:bias|time_const|syn_count|sign|weight)\s+(\S+)", text, re.M)]
    verdict = next((line.split(" (")[0] for line in text.splitlines() if line.startswith(("PASS", "FAIL"))), "?")
    return [["`check_flyvis_agreement.py` (local, full flyvis)",
             f"max {max(rel):.1e} relative to each cell's voltage scale, extents {', '.join(extents)}; parameters "
             f"{'bit-identical' if max(params) == 0 else f'max |diff| {max(params):.1e}'}; {verdict}",
             "~1e-5", "see results/flyvis_agreement.txt"]]


def _reliability_rows() -> list[list[str]]:
    d = _load("reliability.json")
    if d is None:
        return []
    t = d["totals"]
    kills = t["random_kills"]
    sigterms = sum(len(k.get("sigterm", [])) for k in d.get("kills", {}).values())
    stores = d.get("stores", {})
    resumed = sum(k["runs"] for k in d.get("kills", {}).values())
    same = sum(k["identical_to_reference"] for k in d.get("kills", {}).values())
    rows = [[f"`reliability.py`: {t['bad_inputs_tried']} bad inputs, {sum(kills.values())} random SIGKILLs "
             f"({', '.join(f'{v} {k}' for k, v in kills.items())}) and {sigterms} SIGTERMs with resumes, "
             f"{len(d.get('concurrent', []))} concurrent-writer and {stores.get('scenarios')} damaged-store scenarios",
             f"{t['bad_inputs_one_line_exit_2']}/{t['bad_inputs_tried']} one line + exit 2; {t['runs_corrupted']} runs "
             f"corrupted ({same}/{resumed} resumed runs bit-identical to their uninterrupted reference); "
             f"{t['concurrent_scenarios_ok']} concurrent writers refused or serialised; "
             f"{t['damaged_store_scenarios_detected']} damages detected, {t['frames_silently_changed']} frames "
             f"silently changed, {stores.get('repaired_by_simulate')}/{stores.get('scenarios')} repaired by `simulate`",
             "0 lost, 0 corrupted", _when(d)]]
    c = d.get("cost")
    if c:
        rows.append([f"`reliability.py`: cost of the checksums ({c['raw_bytes'] / 1e9:.2f} GB store, best of "
                     f"{c['reps']})",
                     f"writing +{100 * c['write_overhead']:.0f}%, "
                     f"a page-cache-warm read +{100 * c['read_overhead']:.0f}% "
                     f"(CRC-32 at {c['crc32_gb_per_s']:.1f} GB/s: ~{c['crc32_seconds_for_the_55GB_store']:.0f} s for "
                     "the 55 GB store of `store.py`); opening: one `stat` per chunk file "
                     f"({c['best']['open_presence_check_s']:.4f} s vs {c['best']['open_plain_s']:.4f} s without); "
                     "`data verify` "
                     f"{c['data_verify_gb_per_s']:.1f} GB/s", "small", _when(d)])
    return rows


def _ttt_cost_rows() -> list[list[str]]:
    d = _load("ttt.json")
    per = ((d or {}).get("cost") or {}).get("per_step")
    if not per:
        return []
    cost = "; ".join(f"{k} {v['seconds_per_meta_step']:.2f} s and {v['peak_rss_GB']:.2f} GB" for k, v in per.items())
    return [["`ttt.py --parts cost`: one training step of each method at `configs/ttt_rnn.yaml` sizes (4 sessions x "
             "32 support + 16 query windows, 3 inner steps), one thread, peak resident memory", cost, "-", _when(d)]]


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _demote(markdown: str, levels: int = 1) -> str:
    """Headings of an included results page moved ``levels`` down (its title becomes a subsection)."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def render() -> str:
    rows = (_simulate_rows() + _train_latent_rows() + _store_rows() + _poco_rows() + _flyvis_rows()
            + _reliability_rows() + _ttt_cost_rows())
    parts = [
        "# Benchmarks",
        "",
        "<!-- generated by `python benchmarks/render_docs.py` (`make docs`) from benchmarks/results/: do not edit -->",
        "",
        "Speed, memory and reliability targets are checked by the scripts in `benchmarks/`, not by timed tests; "
        "each records its results (with the machine and the date) in `benchmarks/results/`, and this page is "
        "rendered from those files. Run `make bench` (every script, `benchmarks/run_all.py`) or one script to "
        "measure again, then `make docs`. What the numbers mean is discussed beside the features: "
        "[simulator](simulator.md), [latent dynamics](latent.md), [forecasting and adaptation](forecasting.md), "
        "[reliability](reliability.md).",
        "",
        "## Speed, memory and reliability",
        "",
        _table(["benchmark", "result", "target", "measured"], rows),
        "",
    ]
    for name, title, where in REPORTS:  # stable section titles (links point at them), the page's own title beside
        path = RESULTS / name
        text = path.read_text().strip() if path.exists() else ""
        own = ""
        if text.startswith("# "):
            own, _, text = text[2:].partition("\n")
            own = f" (*{own.strip()}*)"
        parts += [f"## {title}", "",
                  f"From `benchmarks/results/{name}`{own}; discussed in [{where.split('#')[0]}]({where}).", ""]
        parts += [_demote(text.strip(), 1) if text else "Not measured yet: run the benchmark that writes it.", ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run `python benchmarks/render_docs.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
