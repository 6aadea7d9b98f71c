"""`neurocast demo` / `make demo`: the main job on built-in data, end to end.

1. simulate the small fly visual system (configs/sim/fly_small.yaml; cached in data/sim);
2. train the tu=20 / ems=5 latent model (configs/latent_20step.yaml);
3. analyse the final checkpoint with 2000-step roll-outs on validation and both
   cross-validation sets;
4. write ``report.md`` (figures + metrics tables) into the run directory.

Prints the metrics table, then the report's path as the last line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from neurocast.presets_index import resolve_config_path
from neurocast.progress import info
from neurocast.report.tables import fmt, format_table, markdown_table
from neurocast.tasks import load_task_config

PRESET = "configs/latent_20step.yaml"


def run_demo(overrides: list[str] | None = None, preset: str = PRESET) -> Path:
    from neurocast.pipelines.latent import train_latent
    from neurocast.pipelines.latent_analysis import LatentAnalysis, summarize_metrics

    t0 = time.perf_counter()
    cfg = load_task_config(resolve_config_path(preset), overrides or [])
    info(f"demo: training {cfg.name} ({cfg.description})")
    run = train_latent(cfg)
    if run.status == "terminated":  # SIGTERM/SIGUSR2: no analysis of an unfinished run
        info(f"training stopped early; continue it with `neurocast train --resume {run.path}`")
        return run.path
    t_train = time.perf_counter() - t0
    analysis = LatentAnalysis(run.path)
    try:
        folder, metrics = analysis.analyze("final")
        data = analysis.task.train.rec
    finally:
        analysis.close()
    header, rows = summarize_metrics(metrics)
    report = write_report(run.path, cfg, metrics, folder, data, t_train, time.perf_counter() - t0)
    print(format_table(header, rows))
    return report


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


FIGURE_NOTES = {
    "rollout_mse": (
        "Roll-out MSE (global, normalised units) against steps since the start (log scale). Orange: latent "
        "roll-out (encode once, evolve with the stimulus, decode), shaded 10-90% of start points; blue: "
        "activity roll-out (decode and re-encode every observation interval). Green: stimulus-only ridge; "
        "purple: linear dynamics in a PCA latent; brown dashed: the model started from the training mean "
        "(memory ablation). Black dashed: the constant training-mean predictor. Grey dotted: linear "
        "interpolation between the observations (an oracle that sees the future observation). Red: the "
        "data's variance, where the stable horizon ends; purple dash-dot: the process-noise floor. Vertical "
        "green: the end of the training window (tu x ems steps). Learned dynamics sit below the green and "
        "purple lines, not only below the black one."
    ),
    "rollout_zoom": (
        "The first two training windows in detail; markers sit on the observation points (every tu "
        "steps). A model that only learned the observation points shows a sawtooth; a model that learned "
        "the dynamics is smooth between them."
    ),
    "variance": (
        "One point per neuron: total variance of its true trace (x) against the variance of its roll-out "
        "error (y), coloured by cell type with the type's name at its centre. Points below the dashed "
        "diagonal are explained better than by their mean; the further below, the better."
    ),
    "traces": (
        "True (black) and rolled-out (orange) traces of one neuron of every cell type, from the start "
        "whose error is the median; R^2 = 1 - var(error) / var(true) in each title."
    ),
    "training_curves": (
        "Left: training loss components per epoch (recon = reconstruction, evolve = sum over loss "
        "multiples, aug = connectome augmentation, reg = L1). Right: validation MSE averaged over the "
        "loss multiples for the validation range and every cross-validation set, with the constant-mean "
        "baseline dashed."
    ),
}


def realism_line(run_dir: Path) -> str:
    """Which fly network made the run's data, and how realistic it is (its diagnostics.json)."""
    import yaml

    from neurocast.sim.fly_simulation import read_diagnostics

    try:
        path = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {})["data"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "Network parameters: unknown (the run's config names no dataset)."
    r = read_diagnostics(path)
    if r is None:
        return f"Network parameters: see `{path}/parameters.json` (the dataset has no diagnostics.json)."
    f = r["forgetting_steps"]
    return (
        f"Network parameters: **{r['parameters']}**. Realism (`neurocast fly diagnose {path}`): median "
        f"direction-selectivity index of T4 {r['median_dsi_t4']:.2f} and T5 {r['median_dsi_t5']:.2f} (moving "
        f"edges, 12 directions); photoreceptors R1-R8 hold {100 * r['photoreceptor_variance_share']:.1f}% of the "
        f"variance; a perturbed state is forgotten in {'-' if f is None else f} steps "
        f"({'-' if f is None else f'{f * 20} ms'}): the system's memory is short, so a long stable roll-out alone "
        "proves little."
    )


def write_report(run_dir: Path, cfg, metrics: dict[str, Any], folder: Path, data, t_train: float,
                 t_total: float) -> Path:
    from neurocast.pipelines.latent_analysis import baseline_table, summarize_metrics, verdict

    tr = cfg.training
    tu, ems, window = tr.time_units, tr.evolve_multiple_steps, tr.window
    lines = [
        f"# neurocast demo: latent dynamics of the fly visual system ({cfg.name})",
        "",
        f"Run directory: `{run_dir}`  ",
        f"Wall time: training {t_train:.0f} s, total {t_total:.0f} s  ",
        f"Checkpoint analysed: `{metrics['checkpoint']}` (epoch {metrics['epoch']})",
        "",
        "## Data",
        "",
        f"Simulated fly visual system from the flyvis connectome: {data.N} cells of "
        f"{len(data.cell_type_names or [])} cell types, {data.stimulus_dims} columns of visual input, "
        f"dt = {data.dt * 1000:.0f} ms. Training recording `{data.session}`: {data.T} frames "
        f"(naturalistic textures under self-motion, with process noise); cross-validation: the same "
        "family without noise and a new seed (`natural_noiseless`), and artificial stimuli never seen in "
        "training (`artificial`: edges, bars, gratings, flashes, looming, dots).",
        "",
        realism_line(run_dir),
        "",
        "## Model and training",
        "",
        f"Encoder -> latent evolver -> decoder, latent dimension {cfg.model.latent_dims}. Activity is "
        f"observed only every tu = {tu} frames ({tr.acquisition_mode.mode}); the evolver is unrolled "
        f"{window} steps with losses at {', '.join(map(str, tr.loss_multiples))} "
        f"(ems = {ems}); {tr.reconstruction_warmup_epochs} reconstruction warm-up epochs, then {tr.epochs} "
        "epochs. All MSEs are in normalised units (per-neuron training mean removed, divided by one "
        "global training std).",
        "",
        "## Validation MSE at the loss multiples",
        "",
    ]
    val = metrics["validation"]
    rows = []
    for s in tr.loss_multiples:
        rows.append([str(s), fmt(val.get(f"val/mse_at_{s}")), fmt(val.get(f"val/mean_baseline_at_{s}")),
                     fmt(val.get(f"val/copy_baseline_at_{s}"))])
    lines += [markdown_table(["step", "model", "constant (training mean)", "copy last observation"], rows), ""]
    lines += [
        f"## Does the model beat the strongest simple baselines? ({metrics['horizon']}-step latent roll-outs, "
        f"{cfg.eval.n_starts} seeded starts per set)",
        "",
        "The baselines are fitted on the observed training frames only (the model's own observation "
        "constraint): a **stimulus-only ridge** regression on the last "
        f"{cfg.eval.baselines.stimulus_lags} stimulus frames, and a **linear dynamical model** "
        f"(z' = A z + B s, {cfg.eval.baselines.lds_dims}-d PCA latent, fitted on pairs {tu} frames apart and "
        "rolled out from the same observation as the model). The **memory ablation** is the model itself "
        "started from the training mean instead of the observation. Metric: every neuron's MSE in units of its own "
        "training variance, averaged over neurons, **without the photoreceptors R1-R8** (the stimulus drives them "
        "almost linearly); lower is better.",
        "",
    ]
    verdicts = []
    for name, sets in metrics["rollouts"].items():
        lat = sets.get("latent")
        if not lat:
            continue
        header, rows = baseline_table(lat)
        lines += [f"### {name}", "", markdown_table(header, rows), ""]
        verdicts.append(verdict(name, lat))
    lines += ["Verdict (per-neuron, without R1-R8):", ""] + verdicts + [
        "",
        "The same comparison with R1-R8 included and in the global MSE (all neurons share one scale, so "
        "the largest-variance cells dominate) is in `metrics.json` (`per_neuron`, `mse`, `best_linear`).",
        "",
    ]
    header, rrows = summarize_metrics(metrics)
    lines += ["## Roll-out summary, global MSE (normalised units)", "", markdown_table(header, rrows), "",
              "## Figures", ""]
    titles = {
        "rollout_mse": "Roll-out MSE over the whole horizon",
        "rollout_zoom": "Roll-out MSE in the first training windows",
        "variance": "Per-neuron total vs unexplained variance",
        "traces": "True vs rolled-out traces, one neuron per cell type",
        "training_curves": "Training curves",
    }
    for key, title in titles.items():
        pngs = sorted(folder.glob(f"{key}*.png"))
        if not pngs:
            continue
        lines += [f"### {title}", "", f"How to read: {FIGURE_NOTES[key]}", ""]
        for png in pngs:
            lines += [f"![{png.stem}]({_rel(png, run_dir)})", ""]
    lines += [
        "## Reproduce",
        "",
        "```bash",
        f"neurocast train {PRESET}",
        f"neurocast analyze {run_dir} --epoch final",
        "```",
        "",
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
