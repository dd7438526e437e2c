"""Sample-selection strategies: pick which scored candidates a learner update uses, and with what weights.

A strategy is a small object with one method, `select(pool, batch_size, rng) -> Selection`. The pool is a mapping of
equal-length numpy columns as the scorer produced them (`loss`, `entropy`, `margin`, `max_prob`, `predicted`,
`grad_norm`, `embedding`, `label`, `weight_version`, ...). Weights are importance weights: the learner divides the
weighted loss sum by the batch size (not by the sum of weights), so w_i = 1 / (N p_i) keeps the gradient unbiased
when sample i was drawn with probability p_i from a pool of N.

Adding a strategy is one small class and one line in STRATEGIES; a strategy with state (a memory of recent
selections, a cluster model) offers `state_dict()` / `load_state_dict(state)` (JSON-able) and the learner
checkpoints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np

from ol_ray.config import SelectionConfig


@dataclass(frozen=True)
class Selection:
    indices: np.ndarray  # int64 positions in the candidate pool, no repeats
    weights: np.ndarray  # float32 importance weight per selected sample, same length


class Strategy(Protocol):
    def select(self, pool: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator) -> Selection:
        """Choose min(batch_size, pool size) candidates and their weights."""


def pool_length(pool: Mapping[str, np.ndarray]) -> int:
    """Number of candidates in a pool (every column has this length)."""
    return len(pool["sample_id"])


class RandomSelection:
    """Uniform sampling without replacement; every weight is 1 (p_i = B/N for all i, so the estimate stays unbiased)."""

    def select(self, pool: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator) -> Selection:
        size = min(batch_size, pool_length(pool))
        indices = np.sort(rng.choice(pool_length(pool), size=size, replace=False)).astype(np.int64)
        return Selection(indices=indices, weights=np.ones(size, dtype=np.float32))


STRATEGIES: dict[str, type] = {
    "random": RandomSelection,
}


def make_strategy(cfg: SelectionConfig) -> Strategy:
    """Build the strategy the config names."""
    return STRATEGIES[cfg.strategy]()
