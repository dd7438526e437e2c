"""Set strategies: greedy orders in embedding space (diversity, distribution coverage, BADGE)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ol_ray.selection.base import STRATEGIES, Pool, Ranking, order_by
from ol_ray.selection.config import SelectionConfig


def unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length (for cosine distance), and which rows were usable (finite, non-zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    vectors = vectors.reshape(len(vectors), -1)
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    unit = np.zeros_like(vectors)
    unit[usable] = vectors[usable] / norms[usable, None]
    return unit, usable


def farthest_first(unit: np.ndarray, usable: np.ndarray, memory: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center over the whole pool in cosine distance: each next candidate is the one farthest from
    everything chosen so far and from `memory` (unit rows of recent selections). Returns the order and each
    candidate's distance when it was chosen. Unusable rows come last."""
    size = len(unit)
    nearest = np.full(size, np.inf)
    if len(memory):
        nearest = np.maximum(1.0 - (unit @ memory.T).max(axis=1), 0.0)
    tiebreak = rng.random(size) * 1e-9  # a seeded choice among equal distances
    order, distance = np.empty(size, dtype=np.int64), np.zeros(size)
    taken = np.zeros(size, dtype=bool)
    for position in range(size):
        # usable rows by distance; unusable ones (NaN, zero) after all of them; taken ones never again
        candidates = np.where(taken, -np.inf, np.where(usable, nearest + tiebreak, -1.0 + tiebreak))
        pick = int(np.argmax(candidates))
        order[position], taken[pick] = pick, True
        if usable[pick]:  # the first pick with no memory is 1.0 away: as far as an orthogonal direction
            distance[pick] = min(nearest[pick], 1.0) if np.isfinite(nearest[pick]) else 1.0
            nearest = np.minimum(nearest, np.maximum(1.0 - unit @ unit[pick], 0.0))
    return order, distance


class DiversitySelection:
    """Farthest-first (greedy k-center) in the scorer's embedding space with cosine distance, away from what this
    batch already took and from the last `memory_size` selected embeddings: least similar to what is selected."""

    needs = ("embedding",)

    def __init__(self, memory_size: int = 512):
        self.memory_size = memory_size
        self.memory = np.zeros((0, 0))

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        unit, usable = unit_rows(pool["embedding"])
        memory = self.memory if self.memory.shape[1:] == unit.shape[1:] else np.zeros((0, unit.shape[1]))
        order, distance = farthest_first(unit, usable, memory, rng)
        return Ranking(order=order, scores=distance)

    def observe(self, pool: Pool, chosen: np.ndarray) -> None:
        unit, usable = unit_rows(np.asarray(pool["embedding"])[chosen])
        if self.memory.shape[1:] != unit.shape[1:]:
            self.memory = np.zeros((0, unit.shape[1]))
        self.memory = np.concatenate([self.memory, unit[usable]])[-self.memory_size:]

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        memory = np.asarray(state["memory"], dtype=np.float64)
        self.memory = memory if memory.ndim == 2 else np.zeros((0, 0))



@STRATEGIES.register("diversity")
def _diversity(cfg: SelectionConfig) -> DiversitySelection:
    return DiversitySelection(cfg.memory_size)


class CoverageSelection:
    """Distribution coverage: an online k-means (cosine, `clusters` centroids) models the stream's embedding
    distribution; each next pick comes from the cluster whose share of the selected samples lags its share of the
    stream most, so the selected set's cluster histogram tracks the stream's. Within a cluster the order is random."""

    needs = ("embedding",)

    def __init__(self, clusters: int = 16, decay: float = 0.999):
        self.clusters, self.decay = clusters, decay
        self.centroids = np.zeros((0, 0))
        self.stream_counts = np.zeros(0)
        self.selected_counts = np.zeros(0)

    def _assign(self, unit: np.ndarray) -> np.ndarray:
        return np.argmax(unit @ self.centroids.T, axis=1)

    def _initialise(self, unit: np.ndarray, usable: np.ndarray, rng: np.random.Generator) -> None:
        """k-means++ seeding from this pool; a model with fewer than `clusters` centroids (an earlier pool had too
        few distinct rows) gains new ones from this pool the same way, keeping its counts."""
        rows = unit[usable]
        if not len(rows):
            return
        if self.centroids.shape[1:] != unit.shape[1:]:
            self.centroids, self.stream_counts, self.selected_counts = np.zeros((0, unit.shape[1])), np.zeros(0), \
                np.zeros(0)
        centroids = list(self.centroids)
        if not centroids:
            centroids.append(rows[int(rng.integers(len(rows)))])
        nearest = np.maximum(1.0 - (rows @ np.stack(centroids).T).max(axis=1), 0.0)
        while len(centroids) < self.clusters and nearest.sum() > 1e-9:
            pick = int(rng.choice(len(rows), p=nearest / nearest.sum()))
            centroids.append(rows[pick])
            nearest = np.minimum(nearest, np.maximum(1.0 - rows @ rows[pick], 0.0))
        added = len(centroids) - len(self.centroids)
        self.centroids = np.stack(centroids)
        self.stream_counts = np.concatenate([self.stream_counts, np.zeros(added)])
        self.selected_counts = np.concatenate([self.selected_counts, np.zeros(added)])

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        unit, usable = unit_rows(pool["embedding"])
        if self.centroids.shape[1:] != unit.shape[1:] or len(self.centroids) < self.clusters:
            self._initialise(unit, usable, rng)
        size = len(unit)
        if not len(self.centroids):
            return Ranking(order=rng.permutation(size).astype(np.int64), scores=np.ones(size))
        cluster = self._assign(unit)
        stream = self.stream_counts + np.bincount(cluster[usable], minlength=len(self.centroids))
        target = stream / stream.sum()
        selected = self.selected_counts.copy()
        queues = {c: list(rng.permutation(np.where((cluster == c) & usable)[0])) for c in range(len(self.centroids))}
        order: list[int] = []
        while any(queues.values()):
            total = selected.sum() + 1.0
            deficit = np.array([target[c] * total - selected[c] if queues[c] else -np.inf
                                for c in range(len(self.centroids))])
            best = int(np.argmax(deficit))
            order.append(int(queues[best].pop(0)))
            selected[best] += 1.0
        order.extend(rng.permutation(np.where(~usable)[0]).tolist())
        share = self.selected_counts / max(self.selected_counts.sum(), 1.0)
        scores = np.where(usable, target[cluster] / (share[cluster] + 1.0 / len(self.centroids)), 0.0)
        return Ranking(order=np.asarray(order, dtype=np.int64), scores=scores)

    def observe(self, pool: Pool, chosen: np.ndarray) -> None:
        """The whole pool updates the stream model (mini-batch k-means step); the choice updates the selected
        histogram. Old counts decay so both follow a drifting stream."""
        if not len(self.centroids):
            return
        unit, usable = unit_rows(pool["embedding"])
        cluster = self._assign(unit)
        counts = np.bincount(cluster[usable], minlength=len(self.centroids)).astype(np.float64)
        self.stream_counts = self.stream_counts * self.decay ** usable.sum() + counts
        for c in np.nonzero(counts)[0]:  # move each centroid toward its members' mean by 1/count
            members = unit[usable & (cluster == c)]
            step = len(members) / max(self.stream_counts[c], 1.0)
            moved = (1 - step) * self.centroids[c] + step * members.mean(axis=0)
            self.centroids[c] = moved / max(np.linalg.norm(moved), 1e-12)
        picked = cluster[chosen][usable[chosen]]
        # both histograms decay on the stream's clock, so they forget at the same pace under drift
        self.selected_counts = (self.selected_counts * self.decay ** usable.sum()
                                + np.bincount(picked, minlength=len(self.centroids)))

    def state_dict(self) -> dict[str, Any]:
        return {"centroids": self.centroids.tolist(), "stream_counts": self.stream_counts.tolist(),
                "selected_counts": self.selected_counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        centroids = np.asarray(state["centroids"], dtype=np.float64)
        self.centroids = centroids if centroids.ndim == 2 else np.zeros((0, 0))
        self.stream_counts = np.asarray(state["stream_counts"], dtype=np.float64)
        self.selected_counts = np.asarray(state["selected_counts"], dtype=np.float64)



@STRATEGIES.register("coverage")
def _coverage(cfg: SelectionConfig) -> CoverageSelection:
    return CoverageSelection(cfg.clusters, cfg.coverage_decay)


@STRATEGIES.register("badge", configured=False)
class BadgeSelection:
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding in the space of last-layer gradient embeddings
    g_i = (p_i - onehot(predicted_i)) (x) h_i, h_i the head's input, so the batch is both uncertain (long g) and
    diverse (spread-out g). Distances use <g_i, g_j> = <a_i, a_j><h_i, h_j>, never forming the outer products."""

    needs = ("probs", "features")

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        probs = np.asarray(pool["probs"], dtype=np.float64)
        features = np.asarray(pool["features"], dtype=np.float64).reshape(len(probs), -1)
        usable = np.all(np.isfinite(probs), axis=1) & np.all(np.isfinite(features), axis=1)
        probs, features = np.where(usable[:, None], probs, 0.0), np.where(usable[:, None], features, 0.0)
        error = probs.copy()
        error[np.arange(len(probs)), np.argmax(probs, axis=1)] -= 1.0
        error[~usable] = 0.0
        gram = (error @ error.T) * (features @ features.T)
        squared = np.diag(gram).copy()
        size = len(probs)
        order, taken = [], np.zeros(size, dtype=bool)
        nearest = np.where(usable, np.inf, 0.0)
        first = int(order_by(np.where(usable, squared, np.nan), rng)[0]) if size else 0
        pick = first
        while len(order) < size:
            order.append(pick)
            taken[pick] = True
            if usable[pick]:
                nearest = np.minimum(nearest, np.maximum(squared + squared[pick] - 2.0 * gram[pick], 0.0))
            weights = np.where(taken | ~usable, 0.0, nearest)
            if len(order) < size:
                if weights.sum() > 0:  # D^2 sampling
                    pick = int(rng.choice(size, p=weights / weights.sum()))
                else:  # only duplicates of chosen rows (or unusable rows) left: usable first, then the rest
                    rest = np.where(~taken)[0]
                    pick = int(rest[np.argsort(~usable[rest], kind="stable")][0])
        return Ranking(order=np.asarray(order, dtype=np.int64), scores=np.sqrt(np.maximum(squared, 0.0)))
