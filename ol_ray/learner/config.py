"""The learner section: the optimiser and the learner actor (`ol_ray.learner`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ol_ray.errors import require


@dataclass(frozen=True)
class LearnerConfig:
    lr: float = 5e-5  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_updates: int = 0  # linear learning-rate warmup over this many updates
    decay_updates: int = 0  # then decay linearly to final_lr_fraction * lr over this many updates; 0 = constant
    final_lr_fraction: float = 0.1  # where the decay ends, as a fraction of lr
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 = no clipping
    num_cpus: float = 1.0  # logical CPUs of the learner actor
    num_gpus: float = 0.0  # GPUs of the learner actor; > 0 trains on the GPU
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources of the learner, e.g. {learner: 1}
    torch_threads: int = 2  # torch intra-op threads of the learner
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for update and evaluation (GPU, or AMX/AVX512-BF16 CPU)
    micro_batch_tokens: int = 256  # update in length-sorted micro-batches of this many padded tokens at most; 0 = off
    micro_batch_size: int = 0  # and of at most this many samples (gradient accumulation); 0 = no sample limit
    publish_for_serving: bool = False  # publish every publish_every updates even with no scorer reading weights
    #   (random selection), so `ol-ray serve` follows the run
    publish_every: int = 1  # publish weights every this many updates while scorers run (bounds staleness: runtime.md)
    max_in_flight: int = 2  # candidate pools queued at the learner; more only adds staleness
    max_updates: int = 0  # stop after this many updates; 0 = run until the stream ends
    duplicate_window: int = 10_000_000  # remember the newest this many sample ids (16 bytes each) for repeats; 0 = all
    num_workers: int = 1  # data-parallel learner: this many ranks (each num_cpus, num_gpus and resources) share
    #   every update under torch DDP (NCCL on GPUs, gloo on CPU); 1 = one learner process (docs/distributed.md)
    sharding: Literal["ddp", "fsdp"] = "ddp"  # with num_workers > 1: every rank holds the whole model (ddp), or
    #   1/N of its parameters, gradients and optimizer state (fsdp: FSDP2 fully_shard per block; rank 0 also keeps
    #   the full weights for evaluation, publishing and checkpoints). One learner shards nothing
    placement_strategy: Literal["PACK", "STRICT_PACK", "SPREAD"] = "PACK"  # with num_workers > 1: where the ranks'
    #   bundles go: as few nodes as fit (PACK), one node (STRICT_PACK: NCCL stays off the network), or spread out
    group_timeout_s: float = 300.0  # with num_workers > 1: a collective waiting longer fails the group, which
    #   restarts from the newest checkpoint
    max_restarts: int = 3  # a crashed learner actor restarts from the newest checkpoint at most this many times
    start_timeout_s: float = 600.0  # give up when the learner has not started after this long (resources pending?)


def check_learner(lr: LearnerConfig) -> None:
    """The learner section's own rules."""
    require(lr.lr > 0, f"learner.lr must be positive; got {lr.lr}")
    require(lr.weight_decay >= 0, f"learner.weight_decay must not be negative; got {lr.weight_decay}")
    require(lr.warmup_updates >= 0, f"learner.warmup_updates must not be negative; got {lr.warmup_updates}")
    require(lr.decay_updates >= 0, f"learner.decay_updates must not be negative; got {lr.decay_updates}")
    require(0 <= lr.final_lr_fraction <= 1, f"learner.final_lr_fraction must be in [0, 1]; got {lr.final_lr_fraction}")
    require(lr.grad_clip >= 0, f"learner.grad_clip must be 0 (off) or positive; got {lr.grad_clip}")
    require(lr.num_cpus >= 0 and lr.num_gpus >= 0, "learner.num_cpus and learner.num_gpus must not be negative")
    for name, amount in lr.resources.items():
        require(amount > 0, f"learner.resources.{name} must be a positive amount; got {amount}")
    require(lr.torch_threads >= 1, f"learner.torch_threads must be at least 1; got {lr.torch_threads}")
    require(lr.micro_batch_tokens >= 0, f"learner.micro_batch_tokens must be 0 (off) or positive; got "
                                        f"{lr.micro_batch_tokens}")
    require(lr.micro_batch_size >= 0, f"learner.micro_batch_size must be 0 (no limit) or positive; got "
                                      f"{lr.micro_batch_size}")
    require(lr.publish_every >= 1, f"learner.publish_every must be at least 1; got {lr.publish_every}")
    require(lr.max_in_flight >= 1, f"learner.max_in_flight must be at least 1; got {lr.max_in_flight}")
    require(lr.num_workers >= 1, f"learner.num_workers must be at least 1; got {lr.num_workers}")
    require(lr.num_workers == 1 or lr.num_cpus > 0 or lr.num_gpus > 0 or bool(lr.resources),
            "learner.num_workers > 1 reserves each rank's learner.num_cpus / num_gpus / resources in a placement "
            "group; give it some (learner.num_cpus > 0)")
    require(lr.group_timeout_s > 0, f"learner.group_timeout_s must be positive; got {lr.group_timeout_s}")
    require(lr.max_restarts >= 0, f"learner.max_restarts must not be negative; got {lr.max_restarts}")
    require(lr.start_timeout_s > 0, f"learner.start_timeout_s must be positive; got {lr.start_timeout_s}")
    require(lr.max_updates >= 0, f"learner.max_updates must not be negative; got {lr.max_updates}")
    require(lr.duplicate_window >= 0,
            f"learner.duplicate_window must not be negative (0 = remember every id); got {lr.duplicate_window}")
