"""Sample-selection strategies: which scored candidates an update uses, and with what weights.

A strategy ranks a candidate pool: `rank(pool, rng) -> Ranking`, an order of every candidate (most useful first) and
a non-negative usefulness score per candidate. The pool is a mapping of equal-length numpy columns as the scorer
produced them (`loss`, `entropy`, `margin`, `max_prob`, `probs`, `features`, `grad_norm`, `embedding`, `label`, ...).
A `Selector` turns a ranking into a `Selection` in one of three weighting modes:

- `hard`: the first B of the order, weight 1 each.
- `soft`: the same B, weights proportional to their scores, scaled to mean 1 (the founding method's w_i ~ H(p)).
- `importance`: B distinct candidates drawn with inclusion probability pi_i proportional to score**alpha mixed with
  a uniform share epsilon (systematic PPS sampling gives exactly B distinct samples with exactly these pi_i), weight
  w_i = B / (N pi_i). The learner divides sum_i w_i L_i by B, so the update's loss is the Horvitz-Thompson estimate
  (1/N) sum_{i in S} L_i / pi_i of the whole pool's mean loss: unbiased.

Learner weights are importance weights: the learner divides the weighted loss sum by the batch size, not by the sum
of the weights (which would bias the estimate and drift the effective learning rate as weights change).

A stateful strategy (a memory of recent selections, a cluster model) also has `observe(pool, chosen)`, called with
the final choice, and `state_dict()` / `load_state_dict(state)` (JSON-able), which the learner checkpoints. Adding a
strategy is one small class registered with `@STRATEGIES.register(name)`.
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np

from ol_ray.registry import Registry

Pool = Mapping[str, np.ndarray]

STRATEGIES = Registry("selection strategy", "selection.strategy")  # filled by @STRATEGIES.register in this package

@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # int64 positions in the candidate pool, no repeats
    weights: np.ndarray  # float32 importance weight per selected sample, same length


@dataclass(frozen=True)
class Ranking:
    order: np.ndarray  # every candidate position, most useful first
    scores: np.ndarray  # float64 usefulness >= 0 per candidate (pool order); drives soft and importance weights


class Strategy(Protocol):
    needs: tuple[str, ...]  # the score columns `rank` reads: scorers compute only these

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        """Order the whole pool, most useful first, and score each candidate."""


def pool_length(pool: Pool) -> int:
    """Number of candidates in a pool (every column has this length)."""
    return len(pool["sample_id"])


def order_by(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions by descending score; ties in a seeded random order; NaN and infinite scores last."""
    scores = np.asarray(scores, dtype=np.float64)
    tiebreak = rng.permutation(len(scores))
    broken = ~np.isfinite(scores)
    return np.lexsort((tiebreak, broken, -np.where(broken, 0.0, scores))).astype(np.int64)


def usefulness(scores: np.ndarray) -> np.ndarray:
    """Scores as non-negative finite weights: shifted up by the lowest finite score when it is negative; NaN and
    infinite scores get 0 (after the shift, so they stay below every valid score)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    low = scores[finite].min(initial=0.0)
    return np.where(finite, scores - min(low, 0.0), 0.0)


def scored(scores: np.ndarray, rng: np.random.Generator) -> Ranking:
    """The ranking of a strategy whose usefulness is one number per candidate."""
    return Ranking(order=order_by(scores, rng), scores=usefulness(scores))


