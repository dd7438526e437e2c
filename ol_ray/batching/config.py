"""The batching section: the batch-size policy (`ol_ray.batching`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ol_ray.batching.base import POLICIES
from ol_ray.errors import require


@dataclass(frozen=True)
class BatchingConfig:
    policy: str = "fixed"  # a policy registered in ol_ray.batching.POLICIES (fixed, adaptive, ...)
    batch_size: int = 32  # the batch size of `fixed`, and the starting point of adaptive policies
    min_batch_size: int = 1  # no policy goes below this
    max_batch_size: int = 256  # no policy goes above this
    policies: tuple[str, ...] = ()  # min_of: the policies whose smallest answer is used, e.g. [adaptive, resource]
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"  # scale the learning rate by B / batch_size (or its root)
    noise_decay: float = 0.99  # adaptive: averaging factor of the gradient-noise estimates (they are very noisy)
    hysteresis: float = 0.25  # adaptive: change B only when the target differs from it by more than this fraction
    cooldown_updates: int = 10  # adaptive: at least this many updates between changes of B
    step_factor: float = 2.0  # adaptive: grow or shrink B by at most this factor per change
    loss_rise: float = 0.25  # adaptive: shrink B when the recent loss exceeds its long average by this fraction
    headroom: float = 0.2  # resource: fraction of device memory (CPU: of the RSS budget) left free
    memory_budget_mb: float = 0.0  # resource on CPU: the learner's RSS budget; 0 = the machine's available memory
    period_s: float = 10.0  # periodic: seconds between updates


def measures_gradient_noise(b: BatchingConfig) -> bool:
    """Whether a policy the section names reads the gradient noise of the learner's batch (`adaptive`)."""
    entries = POLICIES.entries([name for name in (b.policy, *b.policies) if name in POLICIES])
    return any(getattr(factory, "wants_gradient_noise", False) for factory, _ in entries.values())


def check_batching(b: BatchingConfig) -> None:
    """The batching section's own rules, names checked against the registered policies."""
    POLICIES.check(b.policy)
    require(1 <= b.min_batch_size <= b.batch_size <= b.max_batch_size,
            "batching needs 1 <= min_batch_size <= batch_size <= max_batch_size; got "
            f"{b.min_batch_size}, {b.batch_size}, {b.max_batch_size}")
    if b.policy == "min_of":
        require(len(b.policies) >= 2, "batching.policies must name at least two policies for min_of, e.g. "
                                      "[adaptive, resource]")
    for name in b.policies:
        require(name in POLICIES and name != "min_of",
                f"batching.policies: {name!r} is not a policy; use {', '.join(n for n in POLICIES if n != 'min_of')}")
    require(0 < b.noise_decay < 1, f"batching.noise_decay must be between 0 and 1; got {b.noise_decay}")
    require(b.hysteresis >= 0, f"batching.hysteresis must not be negative; got {b.hysteresis}")
    require(b.cooldown_updates >= 1, f"batching.cooldown_updates must be at least 1; got {b.cooldown_updates}")
    require(b.step_factor > 1, f"batching.step_factor must be above 1; got {b.step_factor}")
    require(b.loss_rise >= 0, f"batching.loss_rise must not be negative; got {b.loss_rise}")
    require(0 <= b.headroom < 1, f"batching.headroom must be in [0, 1); got {b.headroom}")
    require(b.memory_budget_mb >= 0, f"batching.memory_budget_mb must be 0 (available memory) or positive; got "
                                     f"{b.memory_budget_mb}")
    require(b.period_s > 0, f"batching.period_s must be positive; got {b.period_s}")
