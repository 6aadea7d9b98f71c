"""Roll-out evaluation of a latent task's model on its validation range and CV recordings."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurocast.eval.rollout import RolloutResult, evaluate_rollouts, max_horizon, pick_trace_neurons


def rollout_evaluation(
    task,
    horizon: int,
    n_starts: int,
    seed: int = 0,
    kinds: tuple[str, ...] = ("latent", "activity"),
    sets: list[str] | None = None,
    trace_per_type: int = 1,
) -> dict[str, dict[str, Any]]:
    """{set name: {"results": {kind: RolloutResult}, "horizon": ..., "requested_horizon": ...}}.

    Set names are "val" and "cv/<name>". A range too short for ``horizon`` gets the longest
    roll-out that fits (noted as requested_horizon).
    """
    model = task.model
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, Any]] = {}
    try:
        for es in task.evalsets:
            if sets is not None and es.name not in sets:
                continue
            w = es.windows
            h = min(horizon, max_horizon(w))
            if h < 1:
                continue
            cell_types = w.rec.cell_types
            neurons = pick_trace_neurons(cell_types, w.rec.N, trace_per_type, seed)
            results: dict[str, RolloutResult] = {}
            extras = task.rollout_context(es.name) if hasattr(task, "rollout_context") else {}
            for kind in kinds:
                r = evaluate_rollouts(model, w, kind, h, n_starts, seed, neurons, **extras)
                if r is not None:
                    results[kind] = r
            out[es.name] = {
                "results": results,
                "horizon": h,
                "requested_horizon": horizon,
                "cell_types": cell_types,
                "neuron_ids": w.rec.neuron_ids,
                "session": w.rec.session,
            }
    finally:
        model.train(was_training)
    return out


def per_cell_type(values: np.ndarray, cell_types: np.ndarray | None) -> dict[str, float]:
    """Mean of a per-neuron quantity within each cell type (NaNs ignored)."""
    if cell_types is None:
        return {}
    out = {}
    for t in sorted(set(cell_types.tolist())):
        v = values[cell_types == t]
        v = v[np.isfinite(v)]
        out[t] = float(v.mean()) if v.size else float("nan")
    return out


def silent_types(silent: np.ndarray, cell_types: np.ndarray | None) -> list[str]:
    """Cell types whose neurons are all near-silent (reported as "silent", not as a ratio)."""
    if cell_types is None:
        return []
    return sorted(t for t in set(cell_types.tolist()) if silent[cell_types == t].all())


def metrics_of(evaluation: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """JSON-ready metrics of a rollout_evaluation() result."""
    out: dict[str, Any] = {}
    for name, ev in evaluation.items():
        entry: dict[str, Any] = {"session": ev["session"], "horizon": ev["horizon"],
                                 "requested_horizon": ev["requested_horizon"]}
        for kind, r in ev["results"].items():
            s = r.summary()
            ve = np.where(r.silent, np.nan, r.variance_explained)
            s["variance_explained_per_cell_type"] = per_cell_type(ve, ev["cell_types"])
            s["silent_cell_types"] = silent_types(r.silent, ev["cell_types"])
            s["mse_curve"] = r.curve.tolist()
            for p, c in r.curves.items():
                if p != "model":
                    s[f"{p}_curve"] = c.mean(0).tolist()
            entry[kind] = s
        out[name] = entry
    return out
