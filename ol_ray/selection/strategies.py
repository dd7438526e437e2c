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
strategy is one small class and one line in STRATEGIES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol

import numpy as np

from ol_ray.config import SelectionConfig

Pool = Mapping[str, np.ndarray]


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


# --- score strategies: one column, or a simple function of columns, per candidate --------------------------------

class RandomSelection:
    """Uniform: a random order, equal scores (so importance mode is plain uniform sampling with weight 1)."""

    needs = ()  # reads no score: a run selecting at random needs no scorer

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        size = pool_length(pool)
        return Ranking(order=rng.permutation(size).astype(np.int64), scores=np.ones(size))


class EntropySelection:
    """Predictive entropy H(p(y|x)): the model's uncertainty over all classes."""

    needs = ("entropy",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["entropy"], rng)


class LeastConfidenceSelection:
    """1 - max_y p(y|x): how unsure the model is of its own prediction."""

    needs = ("max_prob",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(1.0 - np.asarray(pool["max_prob"], dtype=np.float64), rng)


class MarginSelection:
    """1 - (p_top1 - p_top2): a small gap between the two likeliest classes is a sample near the boundary."""

    needs = ("margin",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(1.0 - np.asarray(pool["margin"], dtype=np.float64), rng)


class LossSelection:
    """The current loss (online batch selection, Loshchilov & Hutter 2015); chases label noise."""

    needs = ("loss",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["loss"], rng)


class GradientSelection:
    """The per-sample gradient norm the scorer computed (last-layer closed form, or exact with torch.func)."""

    needs = ("grad_norm",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["grad_norm"], rng)


class ReducibleLossSelection:
    """RHO-LOSS (Mindermann et al., ICML 2022): training loss minus the irreducible loss of a model trained on a
    holdout split; high for learnable, not-yet-learnt samples, low for noisy ones (both losses are high) and for
    learnt ones (both are low)."""

    needs = ("loss", "irreducible_loss")

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        if "irreducible_loss" not in pool:
            raise ValueError("rho_loss needs the scorers' irreducible_loss column: the pipeline trains the "
                             "irreducible-loss model when selection.strategy is rho_loss")
        return scored(np.asarray(pool["loss"], np.float64) - np.asarray(pool["irreducible_loss"], np.float64), rng)


# --- set strategies: greedy orders in embedding space -------------------------------------------------------------

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


# --- composition --------------------------------------------------------------------------------------------------

class MixSelection:
    """Several strategies in proportions, e.g. {margin: 0.7, random: 0.3}: position k of the merged order goes to
    the component furthest below its share so far, which takes its best candidate not yet taken. Scores are each
    component's scores scaled to mean 1, averaged by share."""

    def __init__(self, components: Mapping[str, float], cfg: SelectionConfig):
        total = sum(components.values())
        self.shares = {name: share / total for name, share in components.items()}
        self.parts = {name: build_strategy(name, cfg) for name in components}
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
        return {name: part.state_dict() for name, part in self.parts.items() if hasattr(part, "state_dict")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part_state in state.items():
            if hasattr(self.parts.get(name), "load_state_dict"):
                self.parts[name].load_state_dict(part_state)


STRATEGIES: dict[str, Any] = {
    "random": lambda cfg: RandomSelection(),
    "entropy": lambda cfg: EntropySelection(),
    "least_confidence": lambda cfg: LeastConfidenceSelection(),
    "margin": lambda cfg: MarginSelection(),
    "loss": lambda cfg: LossSelection(),
    "gradient": lambda cfg: GradientSelection(),
    "diversity": lambda cfg: DiversitySelection(cfg.memory_size),
    "coverage": lambda cfg: CoverageSelection(cfg.clusters),
    "rho_loss": lambda cfg: ReducibleLossSelection(),
    "badge": lambda cfg: BadgeSelection(),
    "mix": lambda cfg: MixSelection(cfg.mix, cfg),
}

def build_strategy(name: str, cfg: SelectionConfig) -> Strategy:
    """One registered strategy by name."""
    return STRATEGIES[name](cfg)


# --- turning a ranking into a selection ---------------------------------------------------------------------------

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
        return self.strategy.state_dict() if hasattr(self.strategy, "state_dict") else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(state)


def make_strategy(cfg: SelectionConfig) -> Selector:
    """Build the selector the config names: its strategy, weighting mode and class-share cap."""
    return Selector(build_strategy(cfg.strategy, cfg), cfg)
