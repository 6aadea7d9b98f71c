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
