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

from neurocast.config import load_task_config
from neurocast.pipelines.common import resolve_config_path
from neurocast.progress import info
from neurocast.report.tables import fmt, format_table, markdown_table

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
        "Roll-out MSE against steps since the start (log scale). Orange: latent roll-out (encode once, "
        "evolve with the stimulus, decode), shaded 10-90% of start points; blue: activity roll-out "
        "(decode and re-encode every observation interval). Black dashed: the constant training-mean "
        "predictor. Grey dotted: linear interpolation between the observations (averaged over each "
        "interval; an oracle that sees the future observation). Red: the data's variance, where the "
        "stable horizon ends. Green: the end of the training window (tu x ems steps). A learned dynamics "
        "stays well below the black line far beyond the green one."
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


def write_report(run_dir: Path, cfg, metrics: dict[str, Any], folder: Path, data, t_train: float, t_total: float) -> Path:
    from neurocast.pipelines.latent_analysis import summarize_metrics

    tr = cfg.training
    tu, ems = tr.time_units, tr.evolve_multiple_steps
    window = tu * ems
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
        "## Model and training",
        "",
        f"Encoder -> latent evolver -> decoder, latent dimension {cfg.model.latent_dims}. Activity is "
        f"observed only every tu = {tu} frames ({tr.acquisition_mode.mode}); the evolver is unrolled "
        f"{window} steps with losses at {', '.join(str(m * tu) for m in range(1, ems + 1))} "
        f"(ems = {ems}); {tr.reconstruction_warmup_epochs} reconstruction warm-up epochs, then {tr.epochs} "
        "epochs. All MSEs are in normalised units (per-neuron training mean removed, divided by one "
        "global training std).",
        "",
        "## Validation MSE at the loss multiples",
        "",
    ]
    val = metrics["validation"]
    rows = []
    for m in range(1, ems + 1):
        s = m * tu
        rows.append([str(s), fmt(val.get(f"val/mse_at_{s}")), fmt(val.get(f"val/mean_baseline_at_{s}")),
                     fmt(val.get(f"val/copy_baseline_at_{s}"))])
    lines += [markdown_table(["step", "model", "constant (training mean)", "copy last observation"], rows), ""]
    header, rrows = summarize_metrics(metrics)
    lines += [f"## Autonomous roll-outs ({metrics['horizon']} steps, {cfg.eval.n_starts} seeded starts per set)", "",
              markdown_table(header, rrows), ""]
    verdicts = []
    for name, sets in metrics["rollouts"].items():
        lat = sets.get("latent")
        if lat:
            ratio = lat["constant_mse_within_training_window"] / max(lat["mse_within_training_window"], 1e-12)
            verdicts.append(
                f"- **{name}**: within the training window the latent roll-out's MSE is "
                f"{fmt(lat['mse_within_training_window'])} against {fmt(lat['constant_mse_within_training_window'])} "
                f"for the constant baseline ({ratio:.1f}x lower; "
                f"{'better' if lat['beats_constant_within_training_window'] else 'NOT better'}); stable for "
                f"{lat['stable_horizon']} of {lat['horizon']} steps."
            )
    lines += verdicts + ["", "## Figures", ""]
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
