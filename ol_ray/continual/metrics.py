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

Prequential (test-then-train) accuracy (Dawid 1984; Gama, Sebastiao & Rodrigues, "On evaluating stream learning
algorithms", Machine Learning 2013): every sample is predicted by a scorer before the learner can train on it, so its
prediction is an honest test; `Prequential` keeps the running accuracy, the balanced accuracy (mean per-class
recall) and a fading-factor accuracy that follows the recent stream.

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


def continual_metrics(matrix: Sequence[Sequence[float]], baseline: Optional[Sequence[float]]) -> dict[str, Any]:
    """Every metric above, for summary.json and the run report (forward transfer None without a baseline)."""
    lost = forgetting(matrix)
    return {"average_accuracy": average_accuracy(matrix), "backward_transfer": backward_transfer(matrix),
            "forward_transfer": forward_transfer(matrix, baseline) if baseline is not None else None,
            "forgetting": lost,
            "forgetting_mean": float(np.mean(lost)) if lost else None}


@dataclass
class PageHinkley:
    """Page-Hinkley test for a rise in the mean of a stream (the prequential loss). `update(x)` returns True when
    sum_t (x_t - mean_t - delta) has climbed more than `threshold` above its lowest value, after at least
    `min_samples` values; the detector then starts over, so the next drift is measured from the new regime."""

    delta: float = 0.05  # rise per sample tolerated as noise
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


class Prequential:
    """Running test-then-train accuracy of a stream: cumulative, balanced (mean recall over the classes seen) and
    fading (each older sample weighs `fading` times less; about the last 1 / (1 - fading) samples)."""

    def __init__(self, classes: int = 0, fading: float = 0.995):
        self.classes, self.fading = classes, fading
        self.samples, self.correct, self.loss_sum = 0, 0.0, 0.0
        self.faded_correct, self.faded_samples = 0.0, 0.0
        self.class_samples, self.class_correct = [0] * classes, [0] * classes

    def update(self, correct: np.ndarray, losses: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        """Add samples in stream order: `correct` is 1/0 per sample (a causal LM: its token accuracy)."""
        values = np.asarray(correct, dtype=np.float64)
        ages = self.fading ** np.arange(len(values) - 1, -1, -1)  # the newest weighs 1, the one before `fading`
        decay = self.fading ** len(values)
        self.faded_correct = decay * self.faded_correct + float(ages @ values)
        self.faded_samples = decay * self.faded_samples + float(ages.sum())
        self.samples += len(correct)
        self.correct += float(np.sum(correct))
        self.loss_sum += float(np.sum(losses))
        if self.classes and labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            self.class_samples = [int(a + b) for a, b in
                                  zip(self.class_samples, np.bincount(labels, minlength=self.classes))]
            hits = np.bincount(labels, weights=np.asarray(correct, dtype=np.float64), minlength=self.classes)
            self.class_correct = [int(a + round(b)) for a, b in zip(self.class_correct, hits)]

    def metrics(self) -> dict[str, Optional[float]]:
        if not self.samples:
            return {"prequential_accuracy": None, "prequential_accuracy_recent": None,
                    "prequential_balanced_accuracy": None, "prequential_loss": None}
        recalls = [hit / seen for hit, seen in zip(self.class_correct, self.class_samples) if seen]
        return {"prequential_accuracy": self.correct / self.samples,
                "prequential_accuracy_recent": self.faded_correct / self.faded_samples,
                "prequential_balanced_accuracy": float(np.mean(recalls)) if recalls else None,
                "prequential_loss": self.loss_sum / self.samples}

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ("samples", "correct", "loss_sum", "faded_correct",
                                                    "faded_samples", "class_samples", "class_correct")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def task_matrix(history: Sequence[dict[str, Any]], phase_ends: Sequence[int],
                names: Sequence[str]) -> Optional[list[list[float]]]:
    """The square accuracy matrix R[i][j] from the evaluation history (one dict per evaluation, set name ->
    accuracy): row i is the evaluation at the end of phase i (`phase_ends[i]` indexes the history), column j the
    set named like phase j. None unless every phase has an evaluation set of its name and every phase has ended."""
    if not names or len(phase_ends) != len(names):
        return None
    if any(name not in history[end]["accuracy"] for end in phase_ends for name in names):
        return None
    return [[float(history[end]["accuracy"][name]) for name in names] for end in phase_ends]
