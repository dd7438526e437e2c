"""Batch-size policies: decide how many of the candidate pool one learner update uses.

A policy is a small object with one method, `batch_size(context) -> int`. The context carries what the learner knows
when it is about to update: the pool size, its update count, and the resource monitor's latest snapshot (GPU memory,
step time, throughput, queue depth, RSS). The learner clamps the answer to [min_batch_size, max_batch_size] and to
the pool. Adding a policy is one small class and one line in POLICIES; a policy with state offers
`state_dict()` / `load_state_dict(state)` (JSON-able) and the learner checkpoints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from ol_ray.config import BatchingConfig


@dataclass(frozen=True)
class BatchContext:
    pool_size: int  # scored candidates available for this update
    updates: int  # updates applied so far
    snapshot: Mapping[str, Any] = field(default_factory=dict)  # the resource monitor's latest snapshot


class Policy(Protocol):
    def batch_size(self, context: BatchContext) -> int:
        """The number of samples the next update should use."""


class FixedBatch:
    """A constant batch size B (batching.batch_size)."""

    def __init__(self, cfg: BatchingConfig):
        self.size = cfg.batch_size

    def batch_size(self, context: BatchContext) -> int:
        return self.size


POLICIES: dict[str, type] = {
    "fixed": FixedBatch,
}


def make_policy(cfg: BatchingConfig) -> Policy:
    """Build the policy the config names."""
    return POLICIES[cfg.policy](cfg)


def clamp_batch_size(requested: int, cfg: BatchingConfig, pool_size: int) -> int:
    """The policy's answer within [min_batch_size, max_batch_size] and never more than the pool holds."""
    return max(1, min(pool_size, cfg.max_batch_size, max(cfg.min_batch_size, int(requested))))
