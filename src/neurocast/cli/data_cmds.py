"""`neurocast data ...`: inspect recordings."""

from __future__ import annotations

import argparse
import json

from neurocast.cli import register


def _data_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a store (.zarr), an HDF5 or CSV session file, or a folder of them")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per session")
    p.add_argument("--format", default=None, help="force a source by name (see `neurocast data formats`)")
    p.add_argument("--dt", type=float, default=None, help="frame interval in seconds (files that do not store it)")
    p.add_argument("--trace", default=None, help="flavell / wormwideweb: which trace array to read")
    p.add_argument("--series", default=None, help="nwb: which RoiResponseSeries (e.g. DfOverF/plane0)")
    p.add_argument("--stimulus", default=None, help="nwb: stimulus TimeSeries to load (names, comma-separated, or all)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other source option (repeatable), e.g. --option ids=index --option behavior=false")


def parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings as source options (true/false/numbers parsed, the rest kept as text)."""
    import yaml

    from neurocast.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        parsed = yaml.safe_load(value) if value.strip() else ""
        out[key.strip()] = parsed if isinstance(parsed, (bool, int, float)) else value
    return out


@register("info", "summarise recordings in a file, store or folder", _data_info_args, group="data")
def _cmd_data_info(args: argparse.Namespace) -> int:
    from neurocast.data import load_recordings

    options = parse_options(args.option)
    options.update({k: v for k, v in (("dt", args.dt), ("trace", args.trace), ("series", args.series),
                                      ("stimulus", args.stimulus)) if v is not None})
    recs = load_recordings(args.path, format=args.format, **options)
    rows = [r.summary() for r in recs]
    from neurocast.sim.fly_simulation import read_diagnostics

    realism = read_diagnostics(args.path)
    if realism is not None:
        for r in rows:
            r["fly_realism"] = realism
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    header = ["session", "T", "N", "dt [s]", "duration [s]", "stimulus", "cell types", "edges", "channels"]
    table = [
        [
            r["session"], str(r["T"]), str(r["N"]), f"{r['dt']:.4g}", f"{r['duration_s']:.1f}",
            "-" if r["stimulus_dims"] is None else str(r["stimulus_dims"]),
            "-" if r["n_cell_types"] is None else str(r["n_cell_types"]),
            "-" if r["n_edges"] is None else str(r["n_edges"]),
            ",".join(r["channels"]),
        ]
        for r in rows
    ]
    from neurocast.report.tables import format_table

    print(format_table(header, table))
    covs = sorted({k for r in rows for k in r["covariates"]})
    if covs:
        print(f"covariates: {', '.join(covs)}")
    if realism is not None:
        f = realism["forgetting_steps"]
        print(f"fly network: {realism['parameters']}\n  median DSI T4 {realism['median_dsi_t4']:.2f}, T5 "
              f"{realism['median_dsi_t5']:.2f}; R1-R8 hold {100 * realism['photoreceptor_variance_share']:.1f}% of the "
              f"variance; forgetting time {'-' if f is None else f} steps; near-silent cells "
              f"{100 * realism['silent_fraction']:.1f}% (neurocast fly diagnose DATASET for the full report)")
    return 0


def _data_formats_args(p: argparse.ArgumentParser) -> None:
    pass


@register("formats", "list the data formats (sources) neurocast reads", _data_formats_args, group="data")
def _cmd_data_formats(args: argparse.Namespace) -> int:
    from neurocast.data import sources
    from neurocast.report.tables import format_table

    rows = [[name, getattr(src, "patterns", "-"), src.description] for name, src in sorted(sources().items())]
    print(format_table(["format", "files", "description"], rows))
    return 0


def _data_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a store (.zarr) or a folder of stores (e.g. a simulated dataset)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per store")


@register("verify", "check every chunk of stores against the checksums written with them", _data_verify_args,
          group="data")
def _cmd_data_verify(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from neurocast.data.store import damage_message, is_store, read_manifest, verify_store
    from neurocast.errors import DataError

    path = Path(args.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such store or folder")
    if is_store(path):
        stores = [path]
    else:
        stores = sorted(c for c in path.iterdir() if is_store(c) and not c.name.startswith(".")
                        and ".partial-" not in c.name) if path.is_dir() else []
        if not stores and not (path / "COMPLETE").is_file():
            raise DataError(f"{path} is not a neurocast store and holds none")
    rows, bad = [], []
    listed = (path / "COMPLETE").read_text().split()[1:] if (path / "COMPLETE").is_file() else []
    for name in listed:  # a simulated dataset names its stores: a missing or unrecognisable one is damage
        if not is_store(path / name):
            state = "missing" if not (path / name).exists() else "not readable (no zarr.json)"
            problem = f"store {path / name} is {state}"
            rows.append({"store": str(path / name), "ok": False, "manifest": False, "problems": [problem], "files": 0,
                         "bytes": 0, "seconds": 0.0})
            bad.append((path / name, [problem]))
    for store in stores:
        t0 = time.perf_counter()
        try:
            manifest = read_manifest(store)
            problems = verify_store(store, "full")
        except DataError as exc:
            manifest, problems = None, [str(exc)]
        files = manifest["files"] if manifest else {}
        row = {"store": str(store), "ok": not problems, "manifest": manifest is not None, "problems": problems,
               "files": len(files),
               "bytes": sum(int(v[0]) for v in files.values()), "seconds": time.perf_counter() - t0}
        rows.append(row)
        if problems:
            bad.append((store, problems))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from neurocast.report.tables import format_table

        print(format_table(["store", "files", "MiB", "seconds", "status"], [
            [r["store"], str(r["files"]), f"{r['bytes'] / 2**20:.1f}", f"{r['seconds']:.2f}",
             "ok" if r["ok"] else "UNVERIFIABLE (no manifest)" if not r["manifest"] else
             f"DAMAGED: {r['problems'][0]}" + (f" (+{len(r['problems']) - 1} more)" if len(r["problems"]) > 1 else "")]
            for r in rows]))
    if bad:
        store, problems = bad[0]
        first = problems[0] if problems[0].startswith("store ") else damage_message(store, problems)
        more = f" ({len(bad)} of {len(rows)} stores damaged)" if len(rows) > 1 else ""
        raise DataError(first + more)
    return 0
