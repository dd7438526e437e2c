"""The continual section: replay, EWC and drift detection (`ol_ray.continual`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ol_ray.errors import require


@dataclass(frozen=True)
class ContinualConfig:
    """Learning from a stream whose domain shifts, without forgetting: replay, EWC and drift detection."""

    replay_size: int = 0  # samples the learner's replay buffer holds; 0 = no replay
    replay_fraction: float = 0.25  # share of each update's batch drawn from the buffer; the pool is read for the rest
    # what the buffer keeps: a uniform sample of the stream, a class-balanced one, or of what selection chose
    replay_policy: Literal["reservoir", "class_balanced", "selected"] = "reservoir"
    replay_pool_ratio: float = 1.0  # replayed candidates rescored per replayed sample; the strategy picks among them
    ewc_lambda: float = 0.0  # elastic weight consolidation: penalty strength; 0 = off (needs replay_size > 0)
    ewc_every_updates: int = 200  # also re-estimate the Fisher and move the anchor this often; 0 = only at phase
    # ends and detected drifts (it always does there)
    ewc_samples: int = 64  # buffer samples per Fisher estimate
    ewc_decay: float = 0.5  # online EWC: the new Fisher is decay * old + estimate
    drift_detector: Literal["none", "page_hinkley"] = "page_hinkley"  # drift test on the prequential loss, or none
    drift_delta: float = 0.05  # Page-Hinkley: loss rise per sample tolerated as noise
    drift_threshold: float = 50.0  # Page-Hinkley: cumulative rise that signals drift
    drift_min_samples: int = 100  # Page-Hinkley: no signal before this many samples (after each drift)
    drift_reactions: tuple[str, ...] = ()  # on drift, besides the event: replay_boost, reset_batch_policy, checkpoint
    drift_replay_fraction: float = 0.5  # replay_boost: the replay fraction just after a drift
    drift_boost_updates: int = 50  # replay_boost: for this many updates
    prequential_fading: float = 0.995  # fading factor of the recent prequential accuracy (Gama et al. 2013)
    seed: int = 0  # seeds the buffer's sampling


DRIFT_REACTIONS = ("replay_boost", "reset_batch_policy", "checkpoint")


def check_continual(c: ContinualConfig) -> None:
    """The continual section's own rules: replay, EWC, drift detection and its reactions."""
    require(c.replay_size >= 0, f"continual.replay_size must be 0 (no replay) or positive; got {c.replay_size}")
    require(0 <= c.replay_fraction < 1, f"continual.replay_fraction must be in [0, 1); got {c.replay_fraction}")
    require(c.replay_pool_ratio >= 1, f"continual.replay_pool_ratio must be at least 1; got {c.replay_pool_ratio}")
    require(c.ewc_lambda >= 0, f"continual.ewc_lambda must be 0 (off) or positive; got {c.ewc_lambda}")
    require(c.ewc_lambda == 0 or c.replay_size > 0,
            "continual.ewc_lambda > 0 estimates the Fisher information on the replay buffer: set "
            "continual.replay_size > 0 (continual.replay_fraction may be 0 to use the buffer for EWC only)")
    require(c.ewc_every_updates >= 0, f"continual.ewc_every_updates must be 0 (only at phase ends and drifts) or "
                                      f"positive; got {c.ewc_every_updates}")
    require(c.ewc_samples >= 1, f"continual.ewc_samples must be at least 1; got {c.ewc_samples}")
    require(0 <= c.ewc_decay <= 1, f"continual.ewc_decay must be in [0, 1]; got {c.ewc_decay}")
    require(c.drift_delta >= 0, f"continual.drift_delta must not be negative; got {c.drift_delta}")
    require(c.drift_threshold > 0, f"continual.drift_threshold must be positive; got {c.drift_threshold}")
    require(c.drift_min_samples >= 1, f"continual.drift_min_samples must be at least 1; got {c.drift_min_samples}")
    for reaction in c.drift_reactions:
        require(reaction in DRIFT_REACTIONS, f"continual.drift_reactions: {reaction!r} is not a reaction; use "
                                             f"{', '.join(DRIFT_REACTIONS)}")
    require("replay_boost" not in c.drift_reactions or c.replay_size > 0,
            "continual.drift_reactions replay_boost raises the replay fraction: set continual.replay_size > 0")
    require(0 <= c.drift_replay_fraction < 1,
            f"continual.drift_replay_fraction must be in [0, 1); got {c.drift_replay_fraction}")
    require(c.drift_boost_updates >= 1,
            f"continual.drift_boost_updates must be at least 1; got {c.drift_boost_updates}")
    require(0 < c.prequential_fading < 1,
            f"continual.prequential_fading must be between 0 and 1; got {c.prequential_fading}")
