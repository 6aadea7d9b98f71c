"""Early-stopping rule on a series of evaluations.

A value counts as an improvement when it beats the best so far by at least the relative
fraction ``min_improvement`` (lower is better for MSE, higher for the stable horizon).
Training stops when the last ``patience`` evaluations brought no improvement.
"""

from __future__ import annotations

import math


class EarlyStopping:
    def __init__(self, higher_is_better: bool, min_improvement: float = 0.1, patience: int = 3):
        self.higher = higher_is_better
        self.min_improvement = float(min_improvement)
        self.patience = int(patience)
        self.best: float | None = None
        self.since_best = 0
        self.history: list[float] = []

    def _better(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if not math.isfinite(value):
            return False
        if self.higher:
            return value > self.best * (1 + self.min_improvement) if self.best > 0 else value > self.best
        return value < self.best * (1 - self.min_improvement)

    def update(self, value: float) -> tuple[bool, bool]:
        """Record one evaluation; returns (improved, stop)."""
        self.history.append(float(value))
        improved = self._better(float(value))
        if improved:
            self.best = float(value)
            self.since_best = 0
        else:
            self.since_best += 1
        return improved, self.since_best >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "since_best": self.since_best, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.since_best = int(state["since_best"])
        self.history = list(state["history"])
