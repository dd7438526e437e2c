"""Continual-learning measures, plain math callable without Ray: the metrics of an accuracy matrix, and a drift
detector on a stream of losses.

Accuracy matrix: `R[i, j]` is the accuracy on evaluation set j (a domain, or a task) measured at the end of phase
i, phase i being the part of the stream that brought domain i (so the matrix is square, phases x sets in the same
order), and `baseline[j]` the accuracy on set j of the model before any training. The metrics are those of
Lopez-Paz & Ranzato (NeurIPS 2017, "Gradient Episodic Memory for Continual Learning") and Chaudhry et al. (ECCV
2018, "Riemannian Walk for Incremental Learning"):

- average accuracy  ACC = (1/T) sum_j R[T-1, j]
- backward transfer BWT = (1/(T-1)) sum_{j<T-1} (R[T-1, j] - R[j, j])  (negative: forgetting)
- forward transfer  FWT = (1/(T-1)) sum_{j>0} (R[j-1, j] - baseline[j])  (what earlier phases gave a later domain)
- forgetting of set j: max_{l<T-1} R[l, j] - R[T-1, j], for j < T-1 (the best it ever was, minus now)

Drift: the Page-Hinkley test (Page 1954; as used for concept drift by Gama et al., "A survey on concept drift
adaptation", 2014) on the prequential loss: it signals when the loss has risen, on average, more than `threshold`
above its running mean (beyond a tolerated `delta` per sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


def _square(matrix: Sequence[Sequence[float]]) -> np.ndarray:
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        raise ValueError(f"the accuracy matrix must be square, phases x evaluation sets; got shape {values.shape}")
    return values


def average_accuracy(matrix: Sequence[Sequence[float]]) -> float:
    """Mean accuracy over every evaluation set at the end of the last phase."""
    return float(_square(matrix)[-1].mean())


def backward_transfer(matrix: Sequence[Sequence[float]]) -> Optional[float]:
    """How much learning later phases changed the accuracy on earlier sets (negative: forgetting); None with one."""
    values = _square(matrix)
    size = len(values)
    if size < 2:
        return None
    return float(np.mean([values[-1, j] - values[j, j] for j in range(size - 1)]))


def forward_transfer(matrix: Sequence[Sequence[float]], baseline: Sequence[float]) -> Optional[float]:
    """How much the phases before a set's own raised its accuracy above the untrained model's; None with one."""
    values = _square(matrix)
    start = np.asarray(baseline, dtype=np.float64)
    if start.shape != (len(values),):
        raise ValueError(f"the baseline needs one accuracy per evaluation set ({len(values)}); got {start.shape}")
    if len(values) < 2:
        return None
    return float(np.mean([values[j - 1, j] - start[j] for j in range(1, len(values))]))


def forgetting(matrix: Sequence[Sequence[float]]) -> list[float]:
    """Per earlier set (all but the last): its best accuracy before the last phase minus its accuracy now."""
    values = _square(matrix)
    return [float(values[:-1, j].max() - values[-1, j]) for j in range(len(values) - 1)]


def continual_metrics(matrix: Sequence[Sequence[float]], baseline: Sequence[float]) -> dict[str, Any]:
    """Every metric above, for summary.json and the run report."""
    lost = forgetting(matrix)
    return {"average_accuracy": average_accuracy(matrix), "backward_transfer": backward_transfer(matrix),
            "forward_transfer": forward_transfer(matrix, baseline), "forgetting": lost,
            "forgetting_mean": float(np.mean(lost)) if lost else None}


@dataclass
class PageHinkley:
    """Page-Hinkley test for a rise in the mean of a stream (the prequential loss). `update(x)` returns True when
    sum_t (x_t - mean_t - delta) has climbed more than `threshold` above its lowest value, after at least
    `min_samples` values; the detector then starts over, so the next drift is measured from the new regime."""

    delta: float = 0.005  # rise per sample tolerated as noise
    threshold: float = 50.0  # how far the cumulative rise must climb above its minimum to signal drift
    min_samples: int = 30  # no signal before this many values
    count: int = 0
    mean: float = 0.0
    cumulative: float = 0.0
    minimum: float = 0.0

    def update(self, value: float) -> bool:
        self.count += 1
        self.mean += (value - self.mean) / self.count
        self.cumulative += value - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.count >= self.min_samples and self.cumulative - self.minimum > self.threshold:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self.count, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "cumulative": self.cumulative, "minimum": self.minimum}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean = int(state["count"]), float(state["mean"])
        self.cumulative, self.minimum = float(state["cumulative"]), float(state["minimum"])
