"""Batch-size policies: decide how many samples the next learner update uses, and when.

A policy is a small object with one method, `batch_size(context) -> int`; 0 means "not yet" (only `periodic` and
compositions with it wait). The context carries what the learner knows when it is about to update: the candidates
buffered, their mean uncertainty, the seconds since the last update, its update count, and the resource monitor's
snapshot with the learner's own fresh memory readings. The learner clamps the answer to [min_batch_size,
max_batch_size] and reads a pool of `pool_for(B)` candidates (the selection ratio batch_size : selection.pool_size held
at every B) before selecting B of them.

A policy that learns from updates offers `observe(stats)` (called after each applied update with its batch size, loss
and gradient-noise statistics) and `state_dict()` / `load_state_dict(state)` (JSON-able; the learner checkpoints it).
Adding a policy is one small class registered with `@POLICIES.register(name)`. The math (`noise_scale_estimates`,
`fitting_batch`, `lr_scale`, in `ol_ray.batching.policies`) is plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from ol_ray.registry import Registry

POLICIES = Registry("batch policy", "batching.policy")  # filled by @POLICIES.register in this package


@dataclass(frozen=True)
class BatchContext:
    pool_size: int  # scored candidates buffered at the learner
    updates: int  # updates applied so far
    snapshot: Mapping[str, Any] = field(default_factory=dict)  # the monitor's snapshot, with the learner's own memory
    uncertainty: float = 0.0  # mean normalised predictive entropy of the buffered candidates, in [0, 1]
    seconds_since_update: float = 0.0  # since the last update (or the learner's start)
    pool_ratio: float = 1.0  # selection.pool_size / batching.batch_size: candidates read per sample trained


class Policy(Protocol):
    def batch_size(self, context: BatchContext) -> int:
        """The number of samples the next update should use; 0 = wait for more time or candidates."""
