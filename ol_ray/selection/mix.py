"""Composition: several strategies in proportions."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ol_ray.selection.base import STRATEGIES, Pool, Ranking, pool_length
from ol_ray.selection.config import SelectionConfig
from ol_ray.state.contract import load_parts, save_parts


class MixSelection:
    """Several strategies in proportions, e.g. {margin: 0.7, random: 0.3}: position k of the merged order goes to
    the component furthest below its share so far, which takes its best candidate not yet taken. Scores are each
    component's scores scaled to mean 1, averaged by share."""

    def __init__(self, components: Mapping[str, float], cfg: SelectionConfig):
        total = sum(components.values())
        self.shares = {name: share / total for name, share in components.items()}
        self.parts = {name: STRATEGIES.build(name, cfg) for name in components}
        self.needs = tuple(sorted({column for part in self.parts.values() for column in part.needs}))

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        size = pool_length(pool)
        rankings = {name: part.rank(pool, rng) for name, part in self.parts.items()}
        names = list(rankings)
        cursor = {name: 0 for name in names}
        counts = np.zeros(len(names))
        shares = np.array([self.shares[name] for name in names])
        taken = np.zeros(size, dtype=bool)
        order: list[int] = []
        while len(order) < size:
            component = int(np.argmax(shares * (len(order) + 1) - counts))
            ranked = rankings[names[component]].order
            while taken[ranked[cursor[names[component]]]]:
                cursor[names[component]] += 1
            pick = int(ranked[cursor[names[component]]])
            order.append(pick)
            taken[pick] = True
            counts[component] += 1
        scores = sum(self.shares[name] * ranking.scores / max(ranking.scores.mean(), 1e-12)
                     for name, ranking in rankings.items())
        return Ranking(order=np.asarray(order, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64))

    def observe(self, pool: Pool, chosen: np.ndarray) -> None:
        for part in self.parts.values():
            if hasattr(part, "observe"):
                part.observe(pool, chosen)

    def state_dict(self) -> dict[str, Any]:
        return save_parts(self.parts)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self.parts, state)


@STRATEGIES.register("mix")
def _mix(cfg: SelectionConfig) -> MixSelection:
    return MixSelection(cfg.mix, cfg)
