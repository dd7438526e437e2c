"""The selection section: which candidates a strategy picks and how they are weighted (`ol_ray.selection`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ol_ray.errors import require
from ol_ray.selection.base import STRATEGIES


@dataclass(frozen=True)
class SelectionConfig:
    strategy: str = "random"  # a strategy registered in ol_ray.selection.STRATEGIES (random, entropy, margin, ...)
    pool_size: int = 32  # scored candidates per update of batching.batch_size (scaled with B); B are picked from them
    seed: int = 0  # seeds the strategy's random choices
    mode: Literal["hard", "soft", "importance"] = "hard"  # weights: 1 each; ~ score (mean 1); unbiased 1/(N pi)
    alpha: float = 1.0  # importance mode: inclusion probability ~ score**alpha (0 = uniform)
    epsilon: float = 0.1  # importance mode: share of uniform probability mixed in, so every candidate can be drawn
    mix: dict[str, float] = field(default_factory=dict)  # strategy mix: shares, e.g. {margin: 0.7, random: 0.3}
    max_class_share: float = 0.0  # cap any label's share of a selected batch (hard and soft modes); 0 = no cap
    memory_size: int = 512  # diversity: recently selected embeddings the next picks stay away from
    clusters: int = 16  # coverage: centroids of the online k-means model of the stream's embeddings
    coverage_decay: float = 0.999  # coverage: cluster counts fade by this per sample, so shares follow the stream
    holdout_size: int = 1024  # rho_loss: first stream rows held out (never trained on) for the irreducible-loss model
    irreducible_epochs: int = 2  # rho_loss: epochs of fine-tuning the irreducible-loss model on the holdout


def uses_rho_loss(sel: SelectionConfig) -> bool:
    """Whether the strategy, or a part of its mix, needs an irreducible-loss model."""
    return sel.strategy == "rho_loss" or (sel.strategy == "mix" and "rho_loss" in sel.mix)


def check_selection(sel: SelectionConfig) -> None:
    """The selection section's own rules, names checked against the registered strategies."""
    STRATEGIES.check(sel.strategy)
    require(sel.pool_size >= 1, f"selection.pool_size must be at least 1; got {sel.pool_size}")
    require(sel.alpha >= 0, f"selection.alpha must not be negative; got {sel.alpha}")
    require(0 <= sel.epsilon <= 1, f"selection.epsilon must be between 0 and 1; got {sel.epsilon}")
    require(0 <= sel.max_class_share <= 1,
            f"selection.max_class_share must be between 0 and 1; got {sel.max_class_share}")
    require(sel.max_class_share == 0 or sel.mode != "importance",
            "selection.max_class_share cannot be used with selection.mode importance: capping classes would bias "
            "its unbiased estimate; use hard or soft")
    require(sel.memory_size >= 1, f"selection.memory_size must be at least 1; got {sel.memory_size}")
    require(sel.clusters >= 1, f"selection.clusters must be at least 1; got {sel.clusters}")
    require(0 < sel.coverage_decay <= 1, f"selection.coverage_decay must be in (0, 1]; got {sel.coverage_decay}")
    require(sel.holdout_size >= 1, f"selection.holdout_size must be at least 1; got {sel.holdout_size}")
    require(sel.irreducible_epochs >= 1,
            f"selection.irreducible_epochs must be at least 1; got {sel.irreducible_epochs}")
    if sel.strategy == "mix":
        require(bool(sel.mix), "selection.mix must name the strategies to mix and their shares, e.g. "
                               "{margin: 0.7, random: 0.3}")
    for name, share in sel.mix.items():
        require(name in STRATEGIES and name != "mix",
                f"selection.mix.{name} is not a strategy; use {', '.join(n for n in STRATEGIES if n != 'mix')}")
        require(share > 0, f"selection.mix.{name} must be a positive share; got {share}")
