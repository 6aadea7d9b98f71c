"""`neurocast fly diagnose`: realism numbers of a fly network, from a config, a dataset or a trained run.

Writes ``diagnostics.json`` (every number), ``diagnostics.md`` (summary and per-type table)
and ``dsi_tuning.png`` (T4/T5 tuning curves) to the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurocast.errors import ConfigError, DataError
from neurocast.runs import write_json
from neurocast.sim.fly_diagnostics import DS_TYPES, DiagnosticsSpec, diagnose
from neurocast.sim.fly_network import FlyNetwork, build_network
from neurocast.sim.fly_params import FlyParameters, default_parameters, file_provenance, load_parameters


def _from_config(cfg, extent: int | None) -> tuple[FlyNetwork, FlyParameters, str, DiagnosticsSpec, str]:
    from neurocast.sim.fly_simulation import network_parameters

    n = cfg.network
    net = build_network(extent or n.extent, n.connectome_file, n.n_syn_fill)
    params, what = network_parameters(net, n)
    dyn = cfg.dynamics
    train = cfg.recordings.get("train") or next(iter(cfg.recordings.values()))
    noise = dyn.noise_std if train.noise_std is None else train.noise_std
    spec = DiagnosticsSpec(dt=dyn.dt, deg_per_column=n.deg_per_column, noise_std=noise, warmup_s=dyn.warmup_s)
    return net, params, what, spec, cfg.name


def resolve_target(target: str | Path, overrides: list[str] | None = None, extent: int | None = None):
    """(network, parameters, description, spec, name, default output folder) of a diagnose target."""
    from neurocast.config import config_hash
    from neurocast.presets_index import resolve_config_path
    from neurocast.tasks import load_task_config

    p = Path(target).expanduser()
    if p.is_dir():
        if overrides:
            raise ConfigError("overrides apply to a simulation config, not to a dataset folder or run directory")
        if (p / "simulation.yaml").is_file() and (p / "parameters.json").is_file():  # a simulated dataset
            cfg = load_task_config(p / "simulation.yaml")
            net, _, _, spec, name = _from_config(cfg, extent)
            params = load_parameters(p / "parameters.json", net, default_parameters(net))
            what = file_provenance(p / "parameters.json").get("parameters") or f"parameters of {p}"
            return net, params, what, spec, name, p / "diagnostics"
        if (p / "config.yaml").is_file() and (p / "parameters.json").is_file():  # a fly train-task run
            cfg = load_task_config(p / "config.yaml")
            if cfg.task != "fly_task":
                raise ConfigError(f"{p} is a {cfg.task} run, not a fly train-task run")
            net = build_network(extent or cfg.network.extent, cfg.network.connectome_file, cfg.network.n_syn_fill)
            params = load_parameters(p / "parameters.json", net, default_parameters(net))
            spec = DiagnosticsSpec(dt=cfg.dt, deg_per_column=cfg.network.deg_per_column)
            return net, params, f"trained by {p}", spec, cfg.name, p / "diagnostics"
        raise DataError(f"{p} is neither a simulated fly dataset (simulation.yaml + parameters.json) "
                        "nor a fly train-task run (config.yaml + parameters.json)")
    cfg = load_task_config(resolve_config_path(p), overrides)
    if getattr(cfg, "task", None) != "fly_simulation":
        raise ConfigError(f"{target}: task {cfg.task!r} is not a fly simulation config")
    net, params, what, spec, name = _from_config(cfg, extent)
    out = Path(cfg.output_root).parent / "diagnostics" / f"{name}-{config_hash(cfg)}-e{net.extent}"
    return net, params, what, spec, name, out


def diagnose_target(target, overrides=None, *, extent: int | None = None,
                    output: str | Path | None = None) -> tuple[Path, dict]:
    net, params, what, spec, name, default_out = resolve_target(target, overrides, extent)
    diag = diagnose(net, params, spec)
    diag["parameters"] = what
    folder = Path(output).expanduser() if output else default_out
    write_outputs(folder, diag, f"{name}, extent {net.extent}: {what}")
    return folder, diag


def write_outputs(folder: Path, diag: dict[str, Any], title: str) -> None:
    from neurocast.report.figures import dsi_tuning

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "diagnostics.json", diag)
    (folder / "diagnostics.md").write_text(markdown(diag, title))
    dsi_tuning(diag["direction_selectivity"], title, folder / "dsi_tuning.png")


def markdown(diag: dict[str, Any], title: str) -> str:
    s = diag["summary"]
    f = diag["forgetting"]
    lines = [
        f"# Fly network realism: {title}",
        "",
        f"- cells: {diag['cells']} (extent {diag['extent']}); photoreceptors R1-R8 are "
        f"{100 * diag['photoreceptor_cell_share']:.1f}% of cells and hold "
        f"**{100 * s['photoreceptor_variance_share']:.1f}%** of the voltage variance under naturalistic stimuli",
        f"- near-silent cells (voltage std < {diag['silent_std']:g}): {100 * s['silent_fraction']:.1f}%",
        f"- median DSI (flyvis's definition, central cell, {len(diag['direction_selectivity']['angles_deg'])} "
        f"directions): **T4 (ON edges) {s['median_dsi_t4']:.2f}**, **T5 (OFF edges) {s['median_dsi_t5']:.2f}**",
        "- forgetting time (perturbed state, RMS difference to 1/e): "
        + (f"**{f['steps']} steps** ({f['seconds']:.2f} s)" if f["steps"] is not None else "not reached in 5 s"),
    ]
    if s.get("noise_variance_share") is not None:
        lines.append(f"- process noise (std {diag['noise_std']:g} per step): "
                     f"{100 * s['noise_variance_share']:.1f}% of the variance")
    lines += ["", "| cell type | DSI ON | DSI OFF | preferred direction (deg) |", "|---|---|---|---|"]
    for t in DS_TYPES:
        d = diag["direction_selectivity"]["types"][t]
        lines.append(f"| {t} | {d['dsi_on']:.2f} | {d['dsi_off']:.2f} | {d['preferred_direction_deg']:.0f} |")
    noise = s.get("noise_variance_share") is not None
    lines += ["", "| cell type | cells | variance share | silent | median std | mean V"
              + (" | noise share |" if noise else " |"),
              "|---|---|---|---|---|---" + ("|---|" if noise else "|")]
    for t, v in diag["cell_types"].items():
        row = (f"| {t} | {v['cells']} | {100 * v['variance_share']:.2f}% | {100 * v['silent_fraction']:.0f}% "
               f"| {v['std']:.3g} | {v['mean_voltage']:.3g}")
        if noise:
            ns = v.get("noise_variance_share")
            row += f" | {'-' if ns is None else f'{100 * ns:.1f}%'}"
        lines.append(row + " |")
    return "\n".join(lines) + "\n"
