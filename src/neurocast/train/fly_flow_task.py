"""Training task: the fly visual system estimates optic flow (flyvis's recipe, on data we generate).

Every step draws ``batch_size`` fresh naturalistic sequences (textures under self-motion,
seeded by (seed, epoch, step) so a resumed run sees the same data), starts the network
from its grey steady state, runs it through the sequence with back-propagation through
time, decodes the flow at every column from the output cell types and minimises the mean
end-point error (L2 norm of the flow error, flyvis's ``l2norm``) on the inner columns
(one column of rim excluded) after ``burn_in`` frames, plus flyvis's activity penalty on
the per-type mean voltage. Frames whose motion is a saccade-like jump carry no loss.

Validation: the same loss on a fixed set of sequences, the zero-flow predictor's loss on
them (the baseline the network must beat), and the realism diagnostics (direction
selectivity of T4/T5, photoreceptor variance share) of the current parameters at a small
extent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from neurocast.models.fly_task import FlowDecoder, TrainableFlyNetwork
from neurocast.schema.fly_task import FlyTaskConfig
from neurocast.sim.fly_network import FlyNetwork, build_network, hex_to_cartesian
from neurocast.sim.fly_params import FlyParameters
from neurocast.sim.stimuli import WITH_FLOW


def flow_batch(cfg: FlyTaskConfig, net: FlyNetwork, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """``n`` sequences: stimulus (T, C, n), flow (T, n, C, 2) in flow-scale units, valid (T, n)."""
    s = cfg.stimulus
    xy = hex_to_cartesian(net.columns) * cfg.network.deg_per_column
    names = sorted(s.families)
    w = np.array([s.families[k] for k in names], dtype=np.float64)
    picks = rng.choice(len(names), size=n, p=w / w.sum())
    lum, flow, valid = zip(*(WITH_FLOW[names[i]](getattr(s, names[i]), rng, s.frames, cfg.dt, xy) for i in picks))
    return {
        "stimulus": torch.from_numpy(np.stack(lum, axis=2)),
        "flow": torch.from_numpy(np.stack(flow, axis=1) / s.flow_scale_deg_s),
        "valid": torch.from_numpy(np.stack(valid, axis=1)),
    }


class FlowModel(nn.Module):
    def __init__(self, network: TrainableFlyNetwork, decoder: FlowDecoder):
        super().__init__()
        self.network = network
        self.decoder = decoder


class FlyFlowTask:
    def __init__(self, cfg: FlyTaskConfig, net: FlyNetwork, init: FlyParameters, device: torch.device):
        self.cfg = cfg
        self.net = net
        self.init = init
        self.device = device
        self.model = FlowModel(
            TrainableFlyNetwork(net, init, dt=cfg.dt),
            FlowDecoder(net, kind=cfg.decoder.kind, pooling=cfg.decoder.pooling, hidden=cfg.decoder.hidden,
                        radius=cfg.decoder.radius,
                        dropout=cfg.decoder.dropout, ridge=cfg.decoder.ridge, cell_types=cfg.decoder.cell_types),
        ).to(device)
        r = np.abs(net.columns).max(axis=1)
        r = np.maximum(r, np.abs(net.columns.sum(axis=1)))  # hex distance from the centre
        if net.extent > 1:
            self.inner = torch.from_numpy(r < max(net.extent, 1)).to(device)
        else:
            self.inner = torch.ones(net.n_columns, dtype=torch.bool, device=device)
        xy = hex_to_cartesian(net.columns) * cfg.network.deg_per_column
        self.xy = torch.from_numpy(xy.astype(np.float32)).to(device)
        self.r2 = (self.xy**2).sum(dim=1)
        self.node_type = torch.from_numpy(net.node_type.astype(np.int64)).to(device)
        self.type_counts = torch.bincount(self.node_type, minlength=len(net.type_names)).float()
        vr = np.random.default_rng([cfg.stimulus.seed + 1, 999])
        self.val_batch = flow_batch(cfg, net, vr, cfg.training.validation_sequences)
        self.diag_net = build_network(cfg.diagnostics_extent, cfg.network.connectome_file, cfg.network.n_syn_fill)

    # ------------------------------------------------------------------ data
    def start_epoch(self, epoch: int) -> None:
        pass

    def n_batches(self, epoch: int) -> int:
        return self.cfg.training.iterations_per_epoch

    def batches(self, epoch: int):
        for i in range(self.n_batches(epoch)):
            rng = np.random.default_rng([self.cfg.stimulus.seed, epoch, i])
            yield flow_batch(self.cfg, self.net, rng, self.cfg.training.batch_size)

    def batch_samples(self, batch) -> int:
        return int(batch["stimulus"].shape[2])

    # ------------------------------------------------------------------ objective
    def _voltages(self, batch) -> torch.Tensor:
        stim = batch["stimulus"].to(self.device)
        net = self.model.network
        V0 = net.steady_state(stim.shape[2], steps=self.cfg.training.steady_state_steps)
        return net(stim, V0)

    def _scored(self, batch):
        """Flow (T', B, C, 2) after the burn-in and the mask (T', B, C) of scored frames and columns."""
        b = self.cfg.stimulus.burn_in
        flow = batch["flow"].to(self.device)[b:]
        mask = batch["valid"].to(self.device)[b:, :, None] & self.inner[None, None, :]
        return flow, mask

    def _flow_errors(self, V: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """Unexplained motion variance (the loss), end-point error and the zero predictor's end-point error.

        Local decoders predict the flow at every scored column; a global ridge readout predicts
        the self-motion of every scored frame (mean flow and rotation rate over the scored
        columns). A ridge readout is cross-fitted: solved on the first half of the sequences and
        scored on the second, and the other way round.
        """
        flow, mask = self._scored(batch)
        dec = self.model.decoder
        feats = dec.features(V)[self.cfg.stimulus.burn_in:]
        if dec.kind == "ridge":
            n = feats.shape[1]
            halves = (slice(0, n // 2), slice(n // 2, n)) if n > 1 else (slice(0, 1), slice(0, 1))
            if self.cfg.decoder.fit == "in_batch" and self.model.training:
                halves = (slice(0, n), slice(0, n))
            preds, trues = [], []
            for fit, score in (halves, halves[::-1]):
                W = dec.fit(dec.design(feats[:, fit], mask[:, fit]), self._targets(flow[:, fit], mask[:, fit]))
                preds.append(dec.design(feats[:, score], mask[:, score]) @ W)
                trues.append(self._targets(flow[:, score], mask[:, score]))
            pred_s, true_s = torch.cat(preds), torch.cat(trues)
        else:
            pred_s, true_s = dec(feats)[mask], flow[mask]
        sse = (pred_s - true_s).square().sum()
        sst = (true_s - true_s.mean(dim=0)).square().sum().clamp(min=1e-12)
        return {
            "unexplained": sse / sst,
            "epe": (pred_s[:, :2] - true_s[:, :2]).norm(dim=-1).mean(),
            "zero_epe": true_s[:, :2].norm(dim=-1).mean(),
        }

    def _targets(self, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.self_motion(flow, mask) if self.model.decoder.pooling == "global" else flow[mask]

    def self_motion(self, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(S, 3) per scored frame: mean flow over the scored columns and the rotation rate
        (mean of (x f_y - y f_x) / |xy|^2, in flow units per degree)."""
        w = mask.to(flow.dtype)
        n = w.sum(dim=2).clamp(min=1.0)
        mean = (flow * w[..., None]).sum(dim=2) / n[..., None]
        xy, r2 = self.xy, self.r2
        off = (r2 > 0).to(flow.dtype)  # the centre column has no rotation signal
        curl = (xy[:, 0] * flow[..., 1] - xy[:, 1] * flow[..., 0]) / r2.clamp(min=1e-9)
        rot = (curl * w * off).sum(dim=2) / (w * off).sum(dim=2).clamp(min=1.0)
        return torch.cat([mean, rot[..., None]], dim=-1)[mask.any(dim=2)]

    def _penalty(self, V: torch.Tensor) -> torch.Tensor:
        p = self.cfg.penalty
        if p.weight == 0:
            return torch.zeros((), device=V.device)
        b = self.cfg.stimulus.burn_in
        per_cell = V[b:].mean(dim=(0, 2))
        per_type = torch.zeros_like(self.type_counts).index_add(0, self.node_type, per_cell) / self.type_counts
        d = p.baseline - per_type
        w = torch.where(d > 0, torch.full_like(d, p.below_weight), torch.full_like(d, p.above_weight))
        return p.weight * (w * d).square().mean()

    def losses(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        V = self._voltages(batch)
        e = self._flow_errors(V, batch)
        loss = e["unexplained"] if self.model.decoder.kind == "ridge" else e["epe"]
        pen = self._penalty(V)
        return {"total": loss + pen, "unexplained_flow_variance": e["unexplained"].detach(),
                "flow_epe": e["epe"].detach(),
                "zero_flow_epe": e["zero_epe"].detach(), "activity_penalty": pen}

    def validate(self, epoch: int) -> dict[str, Any]:
        """Flow errors on the fixed validation sequences (never trained on) and the realism diagnostics."""
        from neurocast.sim.fly_diagnostics import DiagnosticsSpec, diagnose

        V = self._voltages(self.val_batch)
        e = self._flow_errors(V, self.val_batch)
        out: dict[str, Any] = {
            "val/loss": float(e["unexplained"]),
            "val/flow_epe": float(e["epe"]),
            "val/zero_flow_epe": float(e["zero_epe"]),
        }
        params = self.current_parameters(self.diag_net)
        d = diagnose(self.diag_net, params, DiagnosticsSpec.quick(dt=self.cfg.dt, device=str(self.device)))
        s = d["summary"]
        out.update({
            "val/median_dsi_t4": s["median_dsi_t4"],
            "val/median_dsi_t5": s["median_dsi_t5"],
            "val/photoreceptor_variance_share": s["photoreceptor_variance_share"],
            "val/silent_fraction": s["silent_fraction"],
            "val/forgetting_steps": s["forgetting_steps"],
        })
        return out

    def current_parameters(self, net: FlyNetwork | None = None) -> FlyParameters:
        """The trained per-type / per-pair values on ``net`` (default: the training network)."""
        from neurocast.sim.fly_params import default_parameters

        trained = self.model.network.parameters_for(self.init)
        if net is None or net is self.net:
            return trained
        base = default_parameters(net)
        return FlyParameters(trained.time_const, trained.bias, trained.sign, trained.syn_strength, base.syn_count)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def epoch_label(self, epoch: int) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
