"""Turning a ranking into a selection: the weighting modes (hard, soft, importance) and the class-share cap."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ol_ray.selection.base import STRATEGIES, Pool, Selection, Strategy, pool_length
from ol_ray.selection.config import SelectionConfig
from ol_ray.state.contract import restore_state, state_of


def capped(order: np.ndarray, labels: np.ndarray, batch_size: int, max_share: float) -> np.ndarray:
    """The first `batch_size` of `order` with no label above ceil(max_share * B) of them; when the pool cannot
    satisfy the cap (too few labels), the best skipped candidates fill the rest."""
    if max_share <= 0 or max_share >= 1:
        return order[:batch_size]
    cap = max(1, math.ceil(max_share * batch_size))
    counts: dict[Any, int] = {}
    chosen, skipped = [], []
    for index in order:
        label = labels[index]
        if counts.get(label, 0) < cap:
            chosen.append(index)
            counts[label] = counts.get(label, 0) + 1
            if len(chosen) == batch_size:
                break
        else:
            skipped.append(index)
    chosen.extend(skipped[:batch_size - len(chosen)])
    return np.asarray(chosen, dtype=np.int64)


def inclusion_probabilities(scores: np.ndarray, batch_size: int, alpha: float, epsilon: float) -> np.ndarray:
    """pi_i proportional to (1 - epsilon) * s_i**alpha / sum + epsilon / N, scaled to sum to B, each at most 1
    (the excess of capped ones spread over the rest)."""
    size = len(scores)
    scores = np.maximum(np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    top = scores.max(initial=0.0)
    powered = np.power(scores / top, alpha) if top > 0 else np.zeros(size)  # scaled first: no overflow
    base = (1 - epsilon) * powered / powered.sum() if powered.sum() > 0 else np.zeros(size)
    base = base + (epsilon if powered.sum() > 0 else 1.0) / size
    pi = np.zeros(size)
    free = np.ones(size, dtype=bool)
    remaining = float(batch_size)
    while True:
        total = base[free].sum()  # 0 only when epsilon is 0 and the free ones all score 0: share evenly
        pi[free] = remaining * (base[free] / total if total > 0 else 1.0 / free.sum())
        over = free & (pi >= 1.0)
        if not over.any():
            return np.minimum(pi, 1.0)
        pi[over], free[over] = 1.0, False
        remaining = batch_size - (~free).sum()
        if remaining <= 0 or not free.any():
            pi[free] = 0.0 if remaining <= 0 else pi[free]
            return np.minimum(pi, 1.0)


def systematic_sample(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly sum(pi) distinct positions, position i with probability pi_i (each pi_i <= 1): randomised
    systematic sampling, one uniform start and unit steps along the cumulative pi of a random permutation."""
    permutation = rng.permutation(len(pi))
    edges = np.concatenate([[0.0], np.cumsum(pi[permutation])])
    count = int(round(edges[-1]))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    edges *= count / edges[-1]  # exact total, so the last point falls inside
    points = rng.random() + np.arange(count)
    slots = np.clip(np.searchsorted(edges, points, side="right") - 1, 0, len(pi) - 1)
    chosen = list(dict.fromkeys(permutation[slots].tolist()))
    if len(chosen) < count:  # float rounding at a pi of exactly 1: fill with the likeliest not yet chosen
        rest = [i for i in np.argsort(-pi, kind="stable").tolist() if i not in set(chosen)]
        chosen.extend(rest[:count - len(chosen)])
    return np.asarray(chosen, dtype=np.int64)


class Selector:
    """A strategy plus a weighting mode and a class-share cap: `select(pool, B, rng) -> Selection`."""

    def __init__(self, strategy: Strategy, cfg: SelectionConfig):
        self.strategy, self.cfg = strategy, cfg

    @property
    def needs(self) -> tuple[str, ...]:
        """The score columns the strategy reads."""
        return self.strategy.needs

    def select(self, pool: Pool, batch_size: int, rng: np.random.Generator, observe: bool = True) -> Selection:
        """B of the pool and their weights; `observe=False` leaves a stateful strategy's memory of the stream as it
        is (replayed samples are picked that way)."""
        size = pool_length(pool)
        batch_size = min(batch_size, size)
        ranking = self.strategy.rank(pool, rng)
        if self.cfg.mode == "importance":
            pi = inclusion_probabilities(ranking.scores, batch_size, self.cfg.alpha, self.cfg.epsilon)
            indices = systematic_sample(pi, rng)
            weights = batch_size / (size * pi[indices])
        else:
            indices = capped(ranking.order, np.asarray(pool["label"]), batch_size, self.cfg.max_class_share)
            weights = np.ones(len(indices))
            if self.cfg.mode == "soft":
                chosen = ranking.scores[indices]
                weights = chosen / chosen.mean() if chosen.mean() > 0 else weights
        if observe and hasattr(self.strategy, "observe"):
            self.strategy.observe(pool, indices)
        return Selection(indices=indices.astype(np.int64), weights=weights.astype(np.float32))

    def state_dict(self) -> Optional[dict[str, Any]]:
        return state_of(self.strategy)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_state(self.strategy, state)


def make_strategy(cfg: SelectionConfig) -> Selector:
    """Build the selector the config names: its strategy, weighting mode and class-share cap."""
    return Selector(STRATEGIES.build(cfg.strategy, cfg), cfg)
