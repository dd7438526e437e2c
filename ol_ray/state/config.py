"""The checkpoint section (`ol_ray.state`)."""

from __future__ import annotations

from dataclasses import dataclass

from ol_ray.errors import require


@dataclass(frozen=True)
class CheckpointConfig:
    every_updates: int = 1  # checkpoint at the first window end after this many updates (1: each); 0: at the end
    keep: int = 2  # keep this many newest checkpoints
    start_over_if_unreadable: bool = False  # when checkpoints exist but none is readable: start over, not fail


def check_checkpoint(c: CheckpointConfig) -> None:
    """The checkpoint section's own rules."""
    require(c.every_updates >= 0, "checkpoint.every_updates must be 0 (only at the end) or positive")
    require(c.keep >= 1, f"checkpoint.keep must be at least 1; got {c.keep}")
