"""The built-in batch-size policies (`fixed`, `adaptive`, `uncertainty`, `resource`, `periodic`, `min_of`) and the
plain math they use. The contract is in `ol_ray.batching.base`."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from ol_ray.batching.base import POLICIES, BatchContext, Policy
from ol_ray.batching.config import BatchingConfig
from ol_ray.state.contract import load_parts, save_parts


# --- plain math --------------------------------------------------------------------------------------------------
def noise_scale_estimates(small_sq: float, small_size: int, big_sq: float, big_size: int) -> tuple[float, float]:
    """Unbiased estimates of |G|^2 and tr(Sigma) from the squared norms of two mean gradients over B_small and B_big
    samples (McCandlish et al. 2018, appendix A.1): E|G_B|^2 = |G|^2 + tr(Sigma) / B, solved for the two unknowns."""
    if big_size <= small_size:
        raise ValueError(f"the big batch ({big_size}) must be larger than the small one ({small_size})")
    gradient_sq = (big_size * big_sq - small_size * small_sq) / (big_size - small_size)
    trace = (small_sq - big_sq) / (1.0 / small_size - 1.0 / big_size)
    return gradient_sq, trace


def fitting_batch(snapshot: Mapping[str, Any], memory_per_sample_mb: float, headroom: float,
                  memory_budget_mb: float) -> Optional[int]:
    """The most samples one forward/backward pass can hold, or None before memory per sample has been measured.

    On a GPU: what is free on the device plus what PyTorch's allocator caches unused, less `headroom` of the device,
    over the measured peak memory per sample. On CPU: the RSS budget (`memory_budget_mb`, else the machine's
    available memory plus the learner's RSS) less the learner's RSS, less `headroom` of the budget."""
    if memory_per_sample_mb <= 0:
        return None
    if "learner_gpu_free_mb" in snapshot:
        available = (snapshot["learner_gpu_free_mb"] + snapshot.get("learner_gpu_reserved_mb", 0.0)
                     - snapshot.get("learner_gpu_allocated_mb", 0.0))
        spare = available - headroom * snapshot["learner_gpu_total_mb"]
    else:
        rss = snapshot.get("learner_rss_mb", 0.0)
        budget = memory_budget_mb or (snapshot.get("available_mb", 0.0) + rss)
        spare = (1.0 - headroom) * budget - rss
    return max(1, int(spare // memory_per_sample_mb))


def lr_scale(batch_size: int, reference: int, rule: str) -> float:
    """The learning-rate multiplier for a batch of `batch_size` against the reference batch size: 1 (`none`),
    B / B_ref (`linear`, the SGD rule of Goyal et al. 2017) or sqrt(B / B_ref) (`sqrt`, for Adam-type optimizers)."""
    if rule == "linear":
        return batch_size / reference
    if rule == "sqrt":
        return math.sqrt(batch_size / reference)
    return 1.0


def pool_for(batch_size: int, cfg: BatchingConfig, pool_size: int) -> int:
    """Candidates to read for an update of `batch_size`: the configured ratio selection.pool_size : batching.batch_size
    (32 : 16 scores two candidates per sample trained, at every B), never fewer than B."""
    return max(batch_size, math.ceil(batch_size * pool_size / cfg.batch_size - 1e-9))


def clamp_batch_size(requested: int, cfg: BatchingConfig, pool_size: int) -> int:
    """The policy's answer within [min_batch_size, max_batch_size] and never more than the pool holds."""
    return max(1, min(pool_size, cfg.max_batch_size, max(cfg.min_batch_size, int(requested))))


# --- policies ----------------------------------------------------------------------------------------------------
@POLICIES.register("fixed")
class FixedBatch:
    """A constant batch size B (batching.batch_size)."""

    def __init__(self, cfg: BatchingConfig):
        self.size = cfg.batch_size

    def batch_size(self, context: BatchContext) -> int:
        return self.size


@POLICIES.register("adaptive")
class AdaptiveBatch:
    """Follows the gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018): the batch size past
    which a larger batch stops reducing the number of updates much. The learner measures |G_B|^2 at two batch sizes
    in every update; exponential averages of the two estimates (averaged apart, as the paper advises) give B_simple.
    B moves toward it by at most `step_factor` per change, only when it differs by more than `hysteresis` and at
    least `cooldown_updates` after the last change (so it does not flap), and shrinks by `step_factor` when the
    recent loss rises above its long average by more than `loss_rise`."""

    wants_gradient_noise = True

    def __init__(self, cfg: BatchingConfig):
        self.cfg = cfg
        self.current = cfg.batch_size
        self.gradient_sq = 0.0  # exponential averages, bias-corrected by `weight`
        self.trace = 0.0
        self.weight = 0.0
        self.loss_fast: Optional[float] = None
        self.loss_slow: Optional[float] = None
        self.since_change = 0

    def batch_size(self, context: BatchContext) -> int:
        return self.current

    def noise_scale(self) -> Optional[float]:
        """B_simple from the averaged estimates; None before any. When the averaged |G|^2 is not positive but the
        noise is, the gradient is lost in its noise (late in training): the noise scale is unbounded."""
        if self.weight == 0 or (self.gradient_sq <= 0 and self.trace <= 0):
            return None
        if self.gradient_sq <= 0:
            return math.inf
        return max(self.trace, 0.0) / self.gradient_sq

    def observe(self, stats: Mapping[str, Any]) -> None:
        cfg = self.cfg
        self.since_change += 1
        if stats.get("noise_small_size"):
            gradient_sq, trace = noise_scale_estimates(stats["noise_small_sq"], stats["noise_small_size"],
                                                       stats["noise_big_sq"], stats["batch_size"])
            decay = cfg.noise_decay
            self.gradient_sq = decay * self.gradient_sq + (1 - decay) * gradient_sq
            self.trace = decay * self.trace + (1 - decay) * trace
            self.weight = decay * self.weight + (1 - decay)
        loss = stats.get("sample_loss_mean")
        if loss is not None and math.isfinite(loss):
            # averages over about 5 and 50 updates: a single hard batch is not a rise
            self.loss_fast = loss if self.loss_fast is None else 0.8 * self.loss_fast + 0.2 * loss
            self.loss_slow = loss if self.loss_slow is None else 0.98 * self.loss_slow + 0.02 * loss
        if self.since_change < cfg.cooldown_updates:
            return
        low, high = cfg.min_batch_size, cfg.max_batch_size
        if self.loss_fast is not None and self.loss_fast > self.loss_slow * (1 + cfg.loss_rise):
            self._move_to(max(low, round(self.current / cfg.step_factor)))
            return
        scale = self.noise_scale()
        if scale is None:
            return
        target = min(high, max(low, scale))
        if target > self.current * (1 + cfg.hysteresis):
            self._move_to(min(round(target), math.floor(self.current * cfg.step_factor)))
        elif target < self.current / (1 + cfg.hysteresis):
            self._move_to(max(round(target), math.ceil(self.current / cfg.step_factor)))

    def _move_to(self, size: int) -> None:
        size = min(self.cfg.max_batch_size, max(self.cfg.min_batch_size, int(size)))
        if size != self.current:
            self.current, self.since_change = size, 0

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "gradient_sq": self.gradient_sq, "trace": self.trace, "weight": self.weight,
                "loss_fast": self.loss_fast, "loss_slow": self.loss_slow, "since_change": self.since_change}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:  # never set attributes a saved state names but this policy does not have
            raise ValueError(f"the adaptive batch policy has no state {unknown[0]!r}")
        for key in own:
            setattr(self, key, state.get(key, own[key]))


@POLICIES.register("uncertainty")
class UncertaintyBatch:
    """B grows with the mean uncertainty u (predictive entropy over log of the class count, in [0, 1]) of the
    candidates waiting to be trained: B = min + (max - min) * u. An uncertain model gets larger batches (more
    evidence per step where its gradient is noisiest); a confident one small, frequent updates."""

    needs = ("entropy",)  # score columns it reads (from the buffered candidates): scorers must compute them

    def __init__(self, cfg: BatchingConfig):
        self.cfg = cfg

    def batch_size(self, context: BatchContext) -> int:
        low, high = self.cfg.min_batch_size, self.cfg.max_batch_size
        return round(low + (high - low) * min(1.0, max(0.0, context.uncertainty)))


@POLICIES.register("resource")
class ResourceBatch:
    """The largest B whose forward/backward pass fits the device (`fitting_batch`): free GPU memory from the
    snapshot (or the RSS budget on CPU) over the peak memory per sample the learner measured, with `headroom`.
    Until the first measurement it asks for batching.batch_size. An out-of-memory error sets a ceiling
    (`memory_ceiling` in the snapshot) that it never asks above."""

    def __init__(self, cfg: BatchingConfig):
        self.cfg = cfg

    def batch_size(self, context: BatchContext) -> int:
        snapshot = context.snapshot
        fit = fitting_batch(snapshot, snapshot.get("memory_per_sample_mb", 0.0), self.cfg.headroom,
                            self.cfg.memory_budget_mb)
        size = self.cfg.batch_size if fit is None else fit
        ceiling = snapshot.get("memory_ceiling")
        return min(size, ceiling) if ceiling else size


@POLICIES.register("periodic")
class PeriodicBatch:
    """Update every `period_s` seconds with whatever has accumulated: B = the candidates buffered over the pool
    ratio, at least min_batch_size (wait longer for them) and at most max_batch_size (a burst becomes several
    full-size updates in a row, not one giant batch). A slow stream still gets regular updates."""

    def __init__(self, cfg: BatchingConfig):
        self.cfg = cfg

    def batch_size(self, context: BatchContext) -> int:
        trainable = math.floor(context.pool_size / context.pool_ratio + 1e-9)
        if trainable >= self.cfg.max_batch_size:
            return self.cfg.max_batch_size
        if context.seconds_since_update >= self.cfg.period_s and trainable >= self.cfg.min_batch_size:
            return trainable
        return 0


@POLICIES.register("min_of")
class MinOf:
    """The smallest answer of several policies (batching.policies), e.g. adaptive capped by resource; waits while
    any of them waits. Observations and state go to each."""

    def __init__(self, cfg: BatchingConfig):
        self.parts = {name: POLICIES.build(name, cfg) for name in cfg.policies}
        self.wants_gradient_noise = any(getattr(p, "wants_gradient_noise", False) for p in self.parts.values())
        self.needs = tuple(sorted({column for part in self.parts.values() for column in getattr(part, "needs", ())}))

    def batch_size(self, context: BatchContext) -> int:
        return min(part.batch_size(context) for part in self.parts.values())

    def observe(self, stats: Mapping[str, Any]) -> None:
        for part in self.parts.values():
            if hasattr(part, "observe"):
                part.observe(stats)

    def state_dict(self) -> dict[str, Any]:
        return save_parts(self.parts)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_parts(self.parts, state)


def make_policy(cfg: BatchingConfig) -> Policy:
    """Build the policy the config names."""
    return POLICIES.build(cfg.policy, cfg)


def policy_needs(cfg: BatchingConfig) -> tuple[str, ...]:
    """The score columns the configured policy reads (most read none)."""
    return tuple(getattr(make_policy(cfg), "needs", ()))
