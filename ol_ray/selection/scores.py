"""Score strategies: one column, or a simple function of columns, ranks each candidate."""

from __future__ import annotations

import numpy as np

from ol_ray.selection.base import STRATEGIES, Pool, Ranking, pool_length, scored


@STRATEGIES.register("random", configured=False)
class RandomSelection:
    """Uniform: a random order, equal scores (so importance mode is plain uniform sampling with weight 1)."""

    needs = ()  # reads no score: a run selecting at random needs no scorer

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        size = pool_length(pool)
        return Ranking(order=rng.permutation(size).astype(np.int64), scores=np.ones(size))


@STRATEGIES.register("entropy", configured=False)
class EntropySelection:
    """Predictive entropy H(p(y|x)): the model's uncertainty over all classes."""

    needs = ("entropy",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["entropy"], rng)


@STRATEGIES.register("least_confidence", configured=False)
class LeastConfidenceSelection:
    """1 - max_y p(y|x): how unsure the model is of its own prediction."""

    needs = ("max_prob",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(1.0 - np.asarray(pool["max_prob"], dtype=np.float64), rng)


@STRATEGIES.register("margin", configured=False)
class MarginSelection:
    """1 - (p_top1 - p_top2): a small gap between the two likeliest classes is a sample near the boundary."""

    needs = ("margin",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(1.0 - np.asarray(pool["margin"], dtype=np.float64), rng)


@STRATEGIES.register("loss", configured=False)
class LossSelection:
    """The current loss (online batch selection, Loshchilov & Hutter 2015); chases label noise."""

    needs = ("loss",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["loss"], rng)


@STRATEGIES.register("gradient", configured=False)
class GradientSelection:
    """The per-sample gradient norm the scorer computed (last-layer closed form, or exact with torch.func)."""

    needs = ("grad_norm",)

    def rank(self, pool: Pool, rng: np.random.Generator) -> Ranking:
        return scored(pool["grad_norm"], rng)


@STRATEGIES.register("rho_loss", configured=False)
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
