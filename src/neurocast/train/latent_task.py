"""Latent-dynamics training task: data windows + multi-step objective + validation.

Built from in-memory or store-backed :class:`~neurocast.data.Recording` objects (the
task never opens files). Normalisation is fitted on observed training frames only;
validation uses a fixed, evenly spaced set of windows of the validation range and of
every cross-validation recording, so numbers are comparable across epochs and runs.

Validation metrics (normalised units, MSE) for each loss multiple m = 1..ems:
``val/mse_at_{m*tu}`` for the model, ``val/mean_baseline_at_{..}`` for the constant
training-mean predictor, ``val/copy_baseline_at_{..}`` for copy-last (the start frame
repeated), and ``val/stimulus_baseline_at_{..}`` / ``val/lds_baseline_at_{..}`` for the
stimulus-only ridge and the PCA linear dynamics (:mod:`neurocast.eval.latent_baselines`).
``val/loss`` (checkpoint selection) is the model's mean over multiples.
Cross-validation sets log the same under ``cv/<name>/...``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neurocast.data.acquisition import Acquisition
from neurocast.data.latent_windows import LatentWindows, make_batch
from neurocast.data.normalization import Normalizer
from neurocast.data.recording import Recording
from neurocast.distributed import shard_rows
from neurocast.errors import ConfigError, DataError
from neurocast.eval.early_stopping import EarlyStopping
from neurocast.eval.metrics import masked_mean
from neurocast.models.latent import LatentModel
from neurocast.schema.latent import LatentExperiment
from neurocast.train.latent_objective import (
    Augmentation,
    active_multiples,
    reconstruction_losses,
    unroll_losses,
)


@dataclass
class EvalSet:
    name: str
    windows: LatentWindows
    starts: np.ndarray     # absolute window starts used for validation


def resolve_split(cfg: LatentExperiment, rec: Recording) -> tuple[int, int, int, int]:
    sp = cfg.data.split
    T = rec.T
    vs = sp.validation_start if sp.validation_start is not None else int(round(T * (1 - sp.validation_fraction)))
    ve = sp.validation_end if sp.validation_end is not None else T
    ts = sp.train_start
    te = sp.train_end if sp.train_end is not None else vs
    for name, v in (("train_end", te), ("validation_start", vs), ("validation_end", ve)):
        if v > T:
            raise ConfigError(f"data.split.{name}={v} is beyond the recording's {T} frames")
    if not ts < te:
        raise ConfigError(f"data.split: train_start={ts} must be < train_end={te}")
    if not vs < ve:
        raise ConfigError(f"data.split: validation_start={vs} must be < validation_end={ve}")
    if max(ts, vs) < min(te, ve):
        raise ConfigError(f"data.split: training [{ts}, {te}) and validation [{vs}, {ve}) overlap")
    return ts, te, vs, ve


def fit_normalizers(rec: Recording, channel: str, t0: int, t1: int, acq: Acquisition, mode: str,
                    chunk: int, use_stimulus: bool) -> tuple[Normalizer, Normalizer | None]:
    def blocks():
        for c0 in range(t0, t1, chunk):
            c1 = min(t1, c0 + chunk)
            yield rec.read(c0, c1, channel=channel), acq.mask(c0, c1)

    norm = Normalizer.fit(blocks(), rec.N, mode)
    stim_norm = None
    if use_stimulus and rec.stimulus is not None:
        def sblocks():
            for c0 in range(t0, t1, chunk):
                yield rec.read_stimulus(c0, min(t1, c0 + chunk)), None
        stim_norm = Normalizer.fit(sblocks(), rec.stimulus_dims, "center_scale")
    return norm, stim_norm


def evenly_spaced(starts: np.ndarray, n: int) -> np.ndarray:
    if starts.size <= n:
        return starts
    idx = np.round(np.linspace(0, starts.size - 1, n)).astype(np.int64)
    return starts[np.unique(idx)]


class LatentTask:
    def __init__(
        self,
        cfg: LatentExperiment,
        train_rec: Recording,
        cv_recs: list[tuple[str, Recording, int, int]],
        device: torch.device,
        model: LatentModel | None = None,
        fitted: dict[str, Any] | None = None,
    ):
        """``fitted``: a checkpoint's task state, to reuse its normalisation instead of refitting."""
        self.cfg = cfg
        tr = cfg.training
        self.device = device
        channel = cfg.data.channel
        if channel not in train_rec.channels:
            raise DataError(
                f"data.channel={channel!r}: recording {train_rec.session!r} has channels {sorted(train_rec.channels)}"
            )
        self.channel = channel
        self.tu, self.ems = tr.time_units, tr.evolve_multiple_steps
        self.window = tr.window
        ts, te, vs, ve = resolve_split(cfg, train_rec)
        self.split = (ts, te, vs, ve)
        mode = tr.acquisition_mode.mode
        self.acq = Acquisition(mode, self.tu, train_rec.N, getattr(tr.acquisition_mode, "seed", 0), origin=ts)
        self.staggered = self.acq.mode == "staggered_random"
        use_stim = cfg.model.use_stimulus and train_rec.stimulus is not None
        if fitted is not None:
            self.norm = Normalizer.from_state(fitted["normalizer"])
            sn = fitted.get("stimulus_normalizer")
            self.stim_norm = None if sn is None else Normalizer.from_state(sn)
        else:
            self.norm, self.stim_norm = fit_normalizers(
                train_rec, channel, ts, te, self.acq, cfg.data.normalization, cfg.data.chunk_frames, use_stim
            )
        self.steps = tr.loss_steps

        def windows(rec: Recording, a: int, b: int) -> LatentWindows:
            if rec.N != train_rec.N:
                raise DataError(
                    f"cross-validation recording {rec.session!r} has N={rec.N} neurons, the training one {train_rec.N}"
                )
            if channel not in rec.channels:
                raise DataError(f"cross-validation recording {rec.session!r} has no channel {channel!r}")
            return LatentWindows(rec, channel, a, b, self.acq, self.window, self.norm, self.stim_norm,
                                 cfg.data.chunk_frames, device, use_stim)

        self.train = windows(train_rec, ts, te)
        self.evalsets: list[EvalSet] = []
        val = windows(train_rec, vs, ve)
        n_val = tr.validation_windows
        val_end = min(ve, vs + cfg.data.chunk_frames)
        self.evalsets.append(EvalSet("val", val, evenly_spaced(val.valid_starts(vs, val_end), n_val)))
        for name, rec, a, b in cv_recs:
            w = windows(rec, a, b)
            end = min(b, a + cfg.data.chunk_frames)
            self.evalsets.append(EvalSet(f"cv/{name}", w, evenly_spaced(w.valid_starts(a, end), n_val)))

        self.n_neurons = train_rec.N
        self.stimulus_dims = train_rec.stimulus_dims if use_stim else None
        self.model = (model or LatentModel(self.n_neurons, self.stimulus_dims, cfg.model)).to(device)
        self.rng = np.random.default_rng(np.random.SeedSequence([tr.seed, 1]))
        aug = tr.unconnected_to_zero
        self.augmentation = Augmentation(train_rec.connectome, aug.num_neurons, aug.loss_coeff, tr.seed)
        self.warmup = tr.reconstruction_warmup_epochs
        self.n_valid = self.train.n_valid_starts()
        es = cfg.eval.early_stopping
        self.stop_set = None
        if es.enabled:
            names = [e.name for e in self.evalsets]
            want = es.dataset or (names[1].split("/", 1)[1] if len(names) > 1 else "val")
            self.stop_set = want if want == "val" else f"cv/{want}"
            if self.stop_set not in names:
                raise ConfigError(
                    f"eval.early_stopping.dataset={es.dataset!r} is neither 'val' nor a cross-validation name "
                    f"({', '.join(n.split('/', 1)[-1] for n in names[1:]) or 'none configured'})"
                )
        self.stopper = EarlyStopping(es.metric == "stable_horizon", es.min_improvement, es.patience)
        self.last_stop_record: dict[str, Any] = {}
        self._baselines = None
        self._neuron_variance: np.ndarray | None = None
        #: set name -> share of its variance due to process noise (set by whoever knows the data)
        self.noise_shares: dict[str, float] = {}

    # ------------------------------------------------------------------ schedule
    @property
    def total_epochs(self) -> int:
        return self.warmup + self.cfg.training.epochs

    def phase(self, epoch: int) -> str:
        return "reconstruction_warmup" if epoch < self.warmup else "main"

    def multiples(self, epoch: int) -> int:
        return active_multiples(self.ems, self.cfg.training.ems_warmup_epochs, max(0, epoch - self.warmup))

    def epoch_label(self, epoch: int) -> dict[str, Any]:
        return {"phase": self.phase(epoch), "train/loss_multiples": self.multiples(epoch)}

    def start_epoch(self, epoch: int) -> None:
        frozen = self.phase(epoch) == "reconstruction_warmup"
        for p in self.model.evolver.parameters():
            p.requires_grad_(not frozen)
        if self.model.stimulus_encoder is not None:
            for p in self.model.stimulus_encoder.parameters():
                p.requires_grad_(not frozen)

    # ------------------------------------------------------------------ batches
    def n_batches(self, epoch: int) -> int:
        """Batches per epoch: ``data_passes_per_epoch`` passes over the range's windows *on the
        observation grid* (one window per tu frames), whatever the acquisition: time-aligned
        windows can only start there, while staggered or fully observed ones may start at any
        frame, which would otherwise make an epoch tu times longer (19x at tu = 20)."""
        bs = self.cfg.training.batch_size
        per_pass = self.n_valid if self.acq.aligned_starts else math.ceil(self.n_valid / self.tu)
        return self.cfg.training.data_passes_per_epoch * math.ceil(per_pass / bs)

    def batches(self, epoch: int):
        bs = self.cfg.training.batch_size
        total = self.n_batches(epoch)
        for chunk, n in self.train.epoch_chunks(self.rng, total, bs):
            order = np.zeros(0, dtype=np.int64)
            for _ in range(n):
                if order.size < min(bs, chunk.starts.size):
                    order = np.concatenate([order, self.rng.permutation(chunk.starts)])
                take, order = order[:bs], order[bs:]
                # every process draws the same global batch and gathers only its own rows
                yield make_batch(chunk, take[shard_rows(take.size)], self.steps, self.window, self.staggered)

    def batch_samples(self, batch) -> int:
        return int(batch.x0.shape[0])

    def losses(self, batch, epoch: int) -> dict[str, torch.Tensor]:
        loss_name = self.cfg.training.loss_function
        if self.phase(epoch) == "reconstruction_warmup":
            return reconstruction_losses(self.model, batch, loss_name)
        max_step = self.multiples(epoch) * self.tu
        return unroll_losses(
            self.model, batch, loss_name, max_step, self.tu, self.staggered, self.augmentation
        )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate_set(self, es: EvalSet, batch_size: int = 512) -> dict[str, float]:
        """Per-multiple MSE of the model and the two baselines (normalised units)."""
        model = self.model
        tu, ems = self.tu, self.ems
        counts = np.zeros(ems)
        recon_sum, recon_n = 0.0, 0
        chunk = es.windows.load_chunk(es.windows.t0, min(es.windows.t1, es.windows.t0 + es.windows.chunk_frames))
        local = es.starts - chunk.t0
        mean_pred = torch.as_tensor(self.norm.apply(self.norm.data_mean), device=self.device)
        base = self.baselines
        stim_pred = None
        lags = 0
        if base is not None and base.stimulus is not None:
            from neurocast.eval.rollout import _stimulus_block

            lags = base.stimulus.lags
            block = _stimulus_block(es.windows, chunk.t0 - lags, chunk.t1 + 1)
            stim_pred = torch.as_tensor(base.stimulus.predict(block, lags, chunk.t1 - chunk.t0), dtype=torch.float32,
                                        device=self.device)  # frame chunk.t0 + i at row i
            stim_block = block[lags:]
        n_pred = 5 if stim_pred is not None else 3
        sums = np.zeros((n_pred, ems))
        for i in range(0, local.size, batch_size):
            b = make_batch(chunk, local[i : i + batch_size], self.steps, self.window, self.staggered)
            z = model.encode(b.x0)
            recon = model.decode(z)
            recon_sum += float(masked_mean((recon - b.recon) ** 2, b.recon_mask)) * b.x0.shape[0]
            recon_n += b.x0.shape[0]
            s_enc = model.encode_stimulus(b.stim)
            idx = {st: j for j, st in enumerate(b.steps)}
            rows = local[i : i + batch_size]
            lds = None
            if stim_pred is not None:
                x0 = b.x0.cpu().numpy()
                st = np.stack([stim_block[r : r + self.window] for r in rows])
                scored = np.asarray(b.steps)
                lds = torch.as_tensor(base.lds.rollout(x0, st, self.window, scored), dtype=torch.float32,
                                      device=self.device)
            for k in range(1, self.window + 1):
                z = model.evolve(z, None if s_enc is None else s_enc[:, k - 1])
                m = (k - 1) // tu  # multiple this step belongs to (staggered: whole interval)
                if not self.staggered and k % tu:
                    continue
                if k not in idx:
                    continue
                j = idx[k]
                target = b.targets[:, j]
                mask = None if b.masks is None else b.masks[:, j]
                pred = model.decode(z)
                others = ()
                if stim_pred is not None:
                    others = (stim_pred[torch.as_tensor(rows + k, device=self.device)], lds[:, j])
                for r, p in enumerate((pred, mean_pred.expand_as(target), b.x0, *others)):
                    err = (p - target) ** 2
                    if mask is None:
                        sums[r, m] += float(err.sum())
                    else:
                        sums[r, m] += float(torch.where(mask, err, torch.zeros((), device=err.device)).sum())
                counts[m] += float(target.numel() if mask is None else mask.sum())
        mse = sums / np.maximum(counts, 1)
        out: dict[str, float] = {"recon": recon_sum / max(recon_n, 1)}
        for m in range(ems):
            step = (m + 1) * tu
            out[f"mse_at_{step}"] = float(mse[0, m])
            out[f"mean_baseline_at_{step}"] = float(mse[1, m])
            out[f"copy_baseline_at_{step}"] = float(mse[2, m])
            if n_pred > 3:
                out[f"stimulus_baseline_at_{step}"] = float(mse[3, m])
                out[f"lds_baseline_at_{step}"] = float(mse[4, m])
        out["loss"] = float(mse[0].mean())
        out["mean_baseline"] = float(mse[1].mean())
        out["copy_baseline"] = float(mse[2].mean())
        if n_pred > 3:
            out["stimulus_baseline"] = float(mse[3].mean())
            out["lds_baseline"] = float(mse[4].mean())
        out["windows"] = int(local.size)
        return out

    def validate(self, epoch: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for es in self.evalsets:
            for k, v in self.evaluate_set(es).items():
                out[f"{es.name}/{k}"] = v
        return out

    # ------------------------------------------------------------------ baselines
    @property
    def baselines(self):
        """Stimulus-only ridge and PCA linear dynamics fitted on the observed training frames (once)."""
        if self._baselines is None:
            from neurocast.eval.latent_baselines import BaselineSpec, LatentBaselines

            b = self.cfg.eval.baselines
            spec = BaselineSpec(stimulus_lags=b.stimulus_lags, stimulus_components=b.stimulus_components,
                                lds_dims=b.lds_dims, chunk=self.cfg.data.chunk_frames)
            self._baselines = LatentBaselines(self.train, spec) if b.enabled else False
        return self._baselines or None

    @property
    def neuron_variance(self) -> np.ndarray:
        """(N,) per-neuron variance of the observed training frames, in normalised units."""
        if self._neuron_variance is None:
            from neurocast.eval.rollout import windows_variance

            self._neuron_variance = windows_variance(self.train, per_neuron=True)[1]
        return self._neuron_variance

    def input_neurons(self, rec: Recording) -> np.ndarray:
        """(N,) bool: neurons of the input cell types (eval.input_cell_types, else the recording's
        cell types whose role is "input": R1-R8 for the simulated fly)."""
        types = self.cfg.eval.input_cell_types
        if types is None:
            roles = (rec.provenance or {}).get("cell_type_roles") or {}
            types = [t for t, r in roles.items() if r == "input"]
        if not types or rec.cell_types is None:
            return np.zeros(rec.N, dtype=bool)
        return np.isin(rec.cell_types, list(types))

    def rollout_context(self, name: str) -> dict[str, Any]:
        """What a roll-out evaluation of set ``name`` compares against (see evaluate_rollouts)."""
        es = next(e for e in self.evalsets if e.name == name)
        return {
            "baselines": self.baselines,
            "neuron_variance": self.neuron_variance,
            "input_neurons": self.input_neurons(es.windows.rec),
            "noise_share": self.noise_shares.get(name),
        }

    # ------------------------------------------------------------------ early stopping
    def stop_check(self, epoch: int, record: dict[str, Any]) -> tuple[bool, str]:
        """Every K main epochs: roll out on the chosen set and apply the early-stopping rule."""
        from neurocast.eval.latent_eval import rollout_evaluation

        self.last_stop_record = {}
        es = self.cfg.eval.early_stopping
        if self.stop_set is None or self.phase(epoch) != "main":
            return False, ""
        main_epoch = epoch - self.warmup + 1
        if main_epoch % es.every_epochs:
            return False, ""
        horizon = es.horizon or self.cfg.rollout_horizon()
        ev = rollout_evaluation(self, horizon, es.n_starts, self.cfg.eval.seed, ("latent",), [self.stop_set])
        res = ev.get(self.stop_set, {}).get("results", {}).get("latent")
        if res is None:
            return False, ""
        summ = res.summary()
        value = float(summ["stable_horizon"] if es.metric == "stable_horizon" else summ["mse_overall"])
        improved, stop = self.stopper.update(value)
        self.last_stop_record = {
            "early_stop/dataset": self.stop_set,
            "early_stop/metric": value,
            "early_stop/best": self.stopper.best,
            "early_stop/improved": improved,
            "early_stop/rollout_mse": summ["mse_overall"],
            "early_stop/stable_horizon": summ["stable_horizon"],
            "early_stop/horizon": res.horizon,
        }
        why = (f"{es.metric} on {self.stop_set} did not improve by {es.min_improvement:.0%} in "
               f"{es.patience} evaluations (best {self.stopper.best:.4g})")
        return stop, why

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        import json

        return {
            "rng": json.dumps(self.rng.bit_generator.state),
            "aug_rng": json.dumps(self.augmentation.rng.bit_generator.state),
            "normalizer": self.norm.state_dict(),
            "stimulus_normalizer": None if self.stim_norm is None else self.stim_norm.state_dict(),
            "n_neurons": self.n_neurons,
            "stimulus_dims": self.stimulus_dims,
            "phases": None if self.acq.phases is None else torch.from_numpy(self.acq.phases),
            "early_stopping": json.dumps(self.stopper.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import json

        self.rng.bit_generator.state = json.loads(state["rng"])
        self.augmentation.rng.bit_generator.state = json.loads(state["aug_rng"])
        if "early_stopping" in state:
            self.stopper.load_state_dict(json.loads(state["early_stopping"]))

    def close(self) -> None:
        self.train.close()
        for es in self.evalsets:
            es.windows.close()
