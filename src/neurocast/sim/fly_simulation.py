"""`neurocast simulate` for the fly visual system: config -> dataset folder of stores.

Output folder ``<output_root>/<name>-<config hash>/`` (or ``--output``)::

    simulation.yaml     the resolved config
    parameters.json     every model parameter used (loadable as network.parameters_file)
    diagnostics.json    realism of the network (DSI of T4/T5, forgetting time, variance shares)
    <recording>.zarr    one store per recording (voltage / calcium / fluorescence channels,
                        stimulus per column, cell types, positions, connectome)
    COMPLETE            written last

Each store is written frame block by frame block (at most one block of every parallel
sequence in memory) and moved into place when complete, so a killed simulation resumes
at the first unfinished recording, and a second call with the same config reuses the
folder without simulating anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neurocast.data.store import RecordingWriter, default_chunk_steps
from neurocast.devices import select_device, setup_torch
from neurocast.errors import DataError
from neurocast.progress import info, progress
from neurocast.schema.simulation import FlyNetworkConfig, FlyRecordingSpec, FlySimulationConfig
from neurocast.sim.dataset_folder import COMPLETE, dataset_folder, finished_store, mark_complete, open_dataset  # noqa: F401
from neurocast.sim.fly_dynamics import FlySimulator
from neurocast.sim.fly_network import FlyNetwork, build_network, hex_to_cartesian
from neurocast.sim.fly_params import (
    FlyParameters,
    default_parameters,
    file_provenance,
    load_parameters,
    save_parameters,
    scale_gains,
)

TRAINED_PARAMETERS = Path(__file__).parent / "params" / "flow_trained.json"


def network_parameters(net: FlyNetwork, n: FlyNetworkConfig) -> tuple[FlyParameters, str]:
    """The parameters ``n`` names for ``net`` and a one-line description of where they came from."""
    if n.parameters == "untrained":
        params = default_parameters(net, seed=n.seed, strength_scale=n.strength_scale)
        what = "untrained (flyvis's initialisation"
        if n.excitatory_gain is not None or n.inhibitory_factor != 1.0:
            params = scale_gains(net, params, n.excitatory_gain, n.inhibitory_factor)
            what += f", excitatory gain {n.excitatory_gain}, inhibitory factor {n.inhibitory_factor}"
        what += ")"
    elif n.parameters == "trained":
        if not TRAINED_PARAMETERS.is_file():
            raise DataError(f"neurocast's trained parameters {TRAINED_PARAMETERS} are missing: reinstall neurocast")
        params = load_parameters(TRAINED_PARAMETERS, net, default_parameters(net))
        prov = file_provenance(TRAINED_PARAMETERS)
        what = f"trained (neurocast's task-trained network {prov.get('name', TRAINED_PARAMETERS.name)})"
    else:
        from neurocast.sim.flyvis_pretrained import load_flyvis_parameters, resolve_model_dir

        f = n.parameters
        params = load_flyvis_parameters(f.flyvis, net, f.member)
        what = f"flyvis pretrained network {resolve_model_dir(f.flyvis, f.member)}"
    if n.parameters_file:  # explicit values win over the named ones
        params = load_parameters(n.parameters_file, net, params)
        what += f", overridden by {n.parameters_file}"
    return params, what


def build_model(cfg: FlySimulationConfig) -> tuple[FlyNetwork, FlyParameters, str]:
    """Network, parameters and the parameters' one-line description."""
    n = cfg.network
    net = build_network(n.extent, n.connectome_file, n.n_syn_fill)
    return (net, *network_parameters(net, n))


def simulate_fly(cfg: FlySimulationConfig, output: str | Path | None = None) -> Path:
    """Simulate every recording of ``cfg`` (reusing finished ones); returns the dataset folder."""
    folder, complete = open_dataset(cfg, output)
    if complete:
        return folder
    net, params, what = build_model(cfg)
    save_parameters(folder / "parameters.json", net, params, provenance={"parameters": what})
    device = select_device(cfg.device)
    setup_torch(device)  # on CPU: output blocks reuse freed memory instead of page-faulting it in
    for name, spec in cfg.recordings.items():
        path = folder / f"{name}.zarr"
        if finished_store(path):
            info(f"{name}: already simulated")
            continue
        simulate_recording(cfg, net, params, name, spec, path, device, parameters=what)
    if cfg.diagnostics:
        write_diagnostics(folder, cfg, net, params, what)
    mark_complete(folder, cfg)
    return folder


DIAGNOSTICS = "diagnostics.json"


def read_diagnostics(path: str | Path) -> dict | None:
    """The realism summary (plus the parameters' description) of the simulated fly dataset that
    ``path`` (the dataset folder or one of its stores) belongs to; None when there is none."""
    import json

    f = Path(path).expanduser()
    f = f / DIAGNOSTICS if f.is_dir() and not f.name.endswith(".zarr") else f.parent / DIAGNOSTICS
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
        return {"parameters": d.get("parameters"), **d["summary"]}
    except (ValueError, KeyError, OSError):
        return None


def write_diagnostics(folder: Path, cfg: FlySimulationConfig, net: FlyNetwork, params: FlyParameters,
                      what: str) -> dict:
    """The realism numbers of the simulated network (``neurocast fly diagnose``) into ``folder/diagnostics.json``."""
    import json
    import os

    from neurocast.sim.fly_diagnostics import DiagnosticsSpec, diagnose

    train = cfg.recordings.get("train") or next(iter(cfg.recordings.values()))
    noise = cfg.dynamics.noise_std if train.noise_std is None else train.noise_std
    spec = DiagnosticsSpec(dt=cfg.dynamics.dt, deg_per_column=cfg.network.deg_per_column, noise_std=noise,
                           warmup_s=cfg.dynamics.warmup_s, device=str(select_device(cfg.device)))
    info("measuring the network's realism (fly diagnose)")
    diag = {"parameters": what, **diagnose(net, params, spec)}
    tmp = folder / f".{DIAGNOSTICS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(diag, indent=1))
    tmp.replace(folder / DIAGNOSTICS)
    return diag


def simulate_recording(
    cfg: FlySimulationConfig,
    net: FlyNetwork,
    params: FlyParameters,
    name: str,
    spec: FlyRecordingSpec,
    path: Path,
    device: torch.device,
    parameters: str = "",
) -> Path:
    dyn = cfg.dynamics
    noise = dyn.noise_std if spec.noise_std is None else spec.noise_std
    sim = FlySimulator(
        net, params, dt=dyn.dt, noise_std=noise, tau_calcium=dyn.tau_calcium,
        fluorescence_gain=dyn.fluorescence_gain, fluorescence_offset=dyn.fluorescence_offset, device=device,
    )
    L = int(round(spec.duration_s / dyn.dt))
    if L < 2:
        raise DataError(f"recording {name!r}: duration_s={spec.duration_s} is less than two steps of dt={dyn.dt}")
    S = spec.sequences
    xy = hex_to_cartesian(net.columns) * cfg.network.deg_per_column
    chunk = default_chunk_steps(net.n_nodes)
    block = cfg.block_steps or chunk
    channels = tuple(cfg.channels)
    needs_calcium = bool({"calcium", "fluorescence"} & set(channels))
    writer = RecordingWriter(
        path,
        n_neurons=net.n_nodes,
        dt=dyn.dt,
        channels=list(channels),
        primary=cfg.primary,
        stimulus_dims=net.n_columns,
        neuron_ids=net.neuron_ids(),
        cell_types=net.cell_types,
        positions=net.positions * cfg.network.deg_per_column,
        connectome=net.connectome(params.edge_weights(net)),
        session=name,
        provenance={
            "source": "fly_simulation",
            "simulation": cfg.name,
            "extent": net.extent,
            "connectome_file": Path(net.source_file).name,
            "parameters": parameters,
            "dt": dyn.dt,
            "noise_std": noise,
            "sequences": S,
            "sequence_steps": L,
            "stimulus_families": spec.stimulus.families,
            "stimulus_columns_uv": net.columns.tolist(),
            "cell_type_roles": dict(zip(net.type_names, net.roles)),
        },
        chunk_steps=chunk,
        length=S * L,
        boundaries=[s * L for s in range(1, S)],
        overwrite=False,
    )
    from neurocast.sim.stimuli import StimulusStream

    segments: dict[int, list] = {}
    bar = progress(total=S * L, desc=f"simulate {name}", unit="frame")
    with writer:
        for g0 in range(0, S, cfg.batch):
            group = list(range(g0, min(S, g0 + cfg.batch)))
            B = len(group)
            streams = [StimulusStream(spec.stimulus, xy, dyn.dt, stream=s) for s in group]
            gen = torch.Generator(device=device)
            gen.manual_seed(int(np.random.SeedSequence([spec.seed, g0]).generate_state(1)[0]))
            state = sim.initial_state(B, warmup_s=dyn.warmup_s, grey=dyn.grey, calcium=needs_calcium)
            for t0 in range(0, L, block):
                n = min(block, L - t0)
                stim = np.stack([s.read(n) for s in streams], axis=2)  # (n, C, B)
                out, state = sim.run(state, torch.from_numpy(stim), gen, channels)
                host = {c: v.cpu().numpy() for c, v in out.items()}
                for b, s in enumerate(group):
                    writer.write(
                        s * L + t0,
                        {c: host[c][:, :, b] for c in channels},
                        stimulus=stim[:, :, b],
                    )
                bar.update(n * B)
            for s, stream in zip(group, streams):
                segments[s] = [[int(a), f] for a, f in stream.segments]
        writer.root.attrs["provenance"] = {**writer.root.attrs["provenance"], "stimulus_segments": segments}
    bar.close()
    info(f"{name}: {S} x {L} frames of {net.n_nodes} cells -> {path}")
    return path
