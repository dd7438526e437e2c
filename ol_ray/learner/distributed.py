"""Data-parallel weighted updates over a torch.distributed process group: N ranks, the single learner's update.

One decision per update (which samples, with which weights, and the batch size B) is made once and shared; each
rank computes the weighted loss of its share of the batch over the same normaliser B, and the ranks' gradients are
summed, so that

    sum_r grad( sum_{i in share_r} w_i L_i / B )  =  grad( sum_i w_i L_i / B )

is exactly the gradient one learner takes on the whole batch: not an average of per-rank means, which would weight
a sample of a small share more than one of a large share when B does not divide by N. Every rank then clips the
same summed gradient and steps the same optimizer state, so the weights stay equal without being sent. A regulariser
(EWC) is added once, on rank 0 (the parameters, and so its gradient, are the same on every rank); a non-finite loss
or gradient on any rank reaches every rank through the sum, and all skip the step together.

Plain torch.distributed (gloo on CPU, NCCL on GPUs), callable without Ray: `DataParallel(group).step(...)` is
`ol_ray.learner.update.weighted_step` with the share's loss over the whole batch's normaliser and the gradient sum
between backward and clipping.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ol_ray.tasks.losses import TrainBatch

BUCKET_BYTES = 25 * 2**20  # gradients are summed in flat buckets of about this size (as DDP's default)


def shares(size: int, world: int) -> list[np.ndarray]:
    """The positions of a batch of `size` for each of `world` ranks: contiguous, sizes differing by at most one (a
    rank may get none when the batch is smaller than the group)."""
    return [part.astype(np.int64) for part in np.array_split(np.arange(size), world)]


def share_of(batch: TrainBatch, positions: np.ndarray) -> TrainBatch:
    """The samples of `batch` at `positions`."""
    return TrainBatch([batch.input_ids[i] for i in positions], batch.labels[positions], batch.weights[positions],
                      None if batch.target_masks is None else [batch.target_masks[i] for i in positions])


class DataParallel:
    """Sums gradients and figures over a process group (the default group when `group` is None)."""

    def __init__(self, group: Optional[Any] = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def sum_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the ranks (a rank with no share contributes zeros)."""
        grads = []
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad)
        bucket: list[torch.Tensor] = []
        filled = 0
        for grad in grads:
            bucket.append(grad)
            filled += grad.numel() * grad.element_size()
            if filled >= BUCKET_BYTES:
                self._sum_bucket(bucket)
                bucket, filled = [], 0
        if bucket:
            self._sum_bucket(bucket)

    def _sum_bucket(self, bucket: list[torch.Tensor]) -> None:
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for grad in bucket:
            by_dtype.setdefault(grad.dtype, []).append(grad)
        for tensors in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            offset = 0
            for tensor in tensors:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    def sum_values(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Each value summed over the ranks."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor.tolist()

    def gather_arrays(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's array, in rank order (per-sample figures of each share, for rank 0's accounting)."""
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, array, group=self.group)
        return gathered
