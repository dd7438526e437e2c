"""Data-parallel weighted updates with torch DDP: N ranks of a torch.distributed process group take the single
learner's update.

One decision per update (which samples, with which weights, and the batch size B) is made once and shared; each
rank computes the weighted loss of its share of the batch over the same normaliser B, and DDP reduces the gradients
(overlapping the all-reduce with backward, in buckets), so that

    sum_r grad( sum_{i in share_r} w_i L_i / B )  =  grad( sum_i w_i L_i / B )

is exactly the gradient one learner takes on the whole batch: not an average of per-rank means, which would weight a
sample of a small share more than one of a large share when B does not divide by N. DDP averages over the N ranks,
so each rank's loss is scaled by N. Micro-batches accumulate locally (through the wrapped module itself, as
`no_sync` would, but without DDP's forward: its one-off bucket rebuild is a collective, which ranks with different
numbers of micro-batches would reach at different points) and only the last one of an update synchronises, so ranks
whose shares split into different numbers of micro-batches still reduce once each. A rank without a sample (B < N)
trains on one sample with weight 0, so that it takes part in the reduction. Every rank then adds the same
regulariser (EWC) to the same reduced gradient, clips it and steps the same optimizer state: the weights stay equal
without being sent. A non-finite loss or gradient on any rank reaches every rank through the reduction, and all skip
the step together. An out-of-memory error in a rank's local micro-batches is agreed on before the synchronising one
(`DataParallel.agree_on_memory`): every rank then raises `GroupOutOfMemory`, so that the learner retries the same
update on all ranks with smaller micro-batches instead of leaving the others waiting in the reduction. (An out-of-
memory error inside the synchronising micro-batch cannot be agreed on: the reduction has begun. It raises
`UnagreedOutOfMemory`, the group fails (`GroupFailed`) and restarts from its newest checkpoint with that micro-batch
halved: `ol_ray.learner.group`.)

Plain torch.distributed (gloo on CPU, NCCL on GPUs), callable without Ray: `DataParallel(group)` wraps the model
(`wrap`) and is passed to `ol_ray.learner.update.weighted_step` with the share and the whole batch's normaliser.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ol_ray.tasks.losses import TrainBatch

# buffers (position ids) are synced once, when DDP wraps, not on every forward; torch 2.13 renamed the option
NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                  if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                  else {"broadcast_buffers": False})


def shares(size: int, world: int) -> list[np.ndarray]:
    """The positions of a batch of `size` for each of `world` ranks: contiguous, sizes differing by at most one (a
    rank may get none when the batch is smaller than the group)."""
    return [part.astype(np.int64) for part in np.array_split(np.arange(size), world)]


def share_of(batch: TrainBatch, positions: np.ndarray) -> TrainBatch:
    """The samples of `batch` at `positions`; with none, the first sample with weight 0 (a rank must reduce)."""
    weights, stand_in = batch.weights[positions], not len(positions)
    if stand_in:
        positions, weights = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
    return TrainBatch([batch.input_ids[i] for i in positions], batch.labels[positions], weights,
                      None if batch.target_masks is None else [batch.target_masks[i] for i in positions], stand_in)


class GroupOutOfMemory(MemoryError):
    """Some rank of the group ran out of memory in this update; `largest` is the largest micro-batch (in samples)
    that rank tried, which the learner halves for every rank."""

    def __init__(self, largest: int):
        super().__init__(f"out of memory on a rank of the learner group, in micro-batches of up to {largest} samples")
        self.largest = largest


class GroupFailed(RuntimeError):
    """A rank of the learner group died, or a collective failed: the group must restart from a checkpoint.
    `out_of_memory`, when the cause was an out-of-memory error the ranks could not agree on, is the failed
    micro-batch's size (the restarted group halves it)."""

    def __init__(self, message: str, out_of_memory: int = 0):
        super().__init__(message)
        self.out_of_memory = out_of_memory


class UnagreedOutOfMemory(RuntimeError):
    """An out-of-memory error inside a micro-batch whose collectives the other ranks are already in (DDP's
    synchronising one, any one under FSDP): it cannot be agreed on and retried, so the group fails; `size` is that
    micro-batch's sample count."""

    def __init__(self, size: int):
        super().__init__(f"out of memory in a micro-batch of {size} samples, inside the group's collectives")
        self.size = size


class DataParallel:
    """A rank of the process group (the default group when `group` is None): wraps its model in DDP and sums the
    update's figures over the ranks. (`ol_ray.learner.sharded.Sharded` is the FSDP2 rank.)"""

    sharded = False  # DDP: a full copy on every rank, micro-batches local until the last

    def __init__(self, group: Optional[Any] = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def wrap(self, model: nn.Module, device: torch.device) -> DistributedDataParallel:
        """The model under DDP (its parameters broadcast from rank 0, so every rank starts from the same weights)."""
        index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
        return DistributedDataParallel(model, device_ids=[index] if device.type == "cuda" else None,
                                       process_group=self.group, **NO_BUFFER_SYNC)

    def core(self, model: nn.Module) -> nn.Module:
        """The model inside the wrapper (what a regulariser and the per-rank checks read)."""
        return model.module

    def even_plan(self, plan: list[Any], device: torch.device) -> list[Any]:
        """The micro-batches every rank runs: DDP's own (they need not be as many on every rank)."""
        return plan

    def gather_into(self, model: nn.Module, plain: Optional[nn.Module]) -> None:
        """After a step: nothing to gather (rank 0's model is the one DDP wraps; `Sharded` gathers its shards)."""

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Rank 0's optimizer state (the single learner's format) into this rank's optimizer."""
        optimizer.load_state_dict(state)

    def sum_values(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Each value summed over the ranks."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor.tolist()

    def agree_on_memory(self, largest_failed: int, device: torch.device) -> None:
        """Every rank calls this once per update, before its synchronising micro-batch, with the size of the
        micro-batch that ran out of memory on it (0: none did); raises GroupOutOfMemory on every rank if any did."""
        flag = torch.tensor([largest_failed], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if int(flag.item()):
            raise GroupOutOfMemory(int(flag.item()))
