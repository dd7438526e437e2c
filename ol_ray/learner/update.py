"""The update: one weighted, batched gradient step, and the optimizer and learning-rate schedule it uses.

    theta_{t+1} = theta_t - eta * grad( sum_i w_i L(theta_t; x_i, y_i) / B )

L is the cross-entropy of the label for a classifier, and for a causal LM the mean next-token NLL over the sample's
target tokens (`ol_ray.tasks.causal_lm`).

Plain functions, callable without Ray: `weighted_step` runs the update in memory-bounded micro-batches (gradient
accumulation, the normalisation exact), optionally measuring the gradient noise and the memory per sample that the
`adaptive` and `resource` batch policies read. The learner wraps it with selection, out-of-memory recovery and
accounting.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ol_ray.data.tokenization import length_groups, pad_batch
from ol_ray.learner.distributed import GroupFailed, UnagreedOutOfMemory
from ol_ray.models.loading import autocast
from ol_ray.tasks.losses import TrainBatch, sample_correct, sample_losses


def micro_batch_plan(lengths: Sequence[int], max_tokens: int, max_samples: int = 0,
                     noise_probe: bool = False) -> tuple[list[np.ndarray], int]:
    """The micro-batches of one update (length-sorted groups within the token and sample limits) and how many of
    them form the first half of the batch. With `noise_probe`, the batch is split into two interleaved halves of
    the length-sorted order (each like the whole batch in length) so that the gradient after the first half is an
    unbiased mean-gradient estimate at B/2; otherwise the first half is the whole plan."""
    size = len(lengths)
    if not noise_probe or size < 2:
        groups = length_groups(lengths, max_tokens, max_samples)
        return groups, len(groups)
    order = np.argsort(np.asarray(lengths), kind="stable")
    plan: list[np.ndarray] = []
    counts = []
    for half in (order[0::2], order[1::2]):
        groups = [half[g] for g in length_groups([lengths[i] for i in half], max_tokens, max_samples)]
        plan.extend(groups)
        counts.append(len(groups))
    return plan, counts[0]


def _grad_sq(params: Sequence[torch.Tensor]) -> float:
    """The squared norm of the accumulated gradient."""
    return float(sum(p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None))


class ActivationMeter:
    """Bytes of the tensors autograd saves for backward (the activations; parameters excluded), per forward pass:
    the part of a step's memory that grows with the batch, measurable on any device."""

    def __init__(self, model: nn.Module):
        self.parameters = {p.data_ptr() for p in model.parameters()}
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.data_ptr() not in self.parameters:
            self.bytes += tensor.numel() * tensor.element_size()
        return tensor

    def hooks(self):
        self.bytes = 0
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def weighted_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TrainBatch, pad_id: int,
                  device: torch.device, grad_clip: float = 0.0, precision: str = "fp32",
                  micro_batch_tokens: int = 0, micro_batch_size: int = 0, noise_probe: bool = False,
                  measure_memory: bool = False,
                  penalty: Optional[Callable[[nn.Module], Optional[torch.Tensor]]] = None,
                  normaliser: int = 0, data_parallel: Optional[Any] = None) -> dict[str, Any]:
    """One weighted update: loss = sum_i w_i CE_i / B, B the batch size (not the sum of weights, which would bias
    the estimate and drift the effective learning rate). The gradient is accumulated over length-sorted
    micro-batches of at most `micro_batch_tokens` padded tokens and `micro_batch_size` samples: the same gradient
    as one padded batch, less work and bounded memory. When the loss or the gradient norm is not finite, no step is
    taken and `skipped` is True.

    `noise_probe` also returns the squared norms of the mean gradient after half the batch and after all of it
    (for the gradient noise scale); `measure_memory` returns the peak memory per sample of the largest micro-batch
    (peak allocated on a GPU, saved activations x 2 elsewhere). `penalty(model)`, when given, is a regulariser added
    to the loss once per update (EWC, `ol_ray.continual.ewc`); its value is returned as `penalty`, apart from `loss`
    (the weighted data loss). `sample_losses` and `sample_correct` (numpy, batch order) are each sample's loss and
    prediction before the step: test-then-train figures at no extra cost.

    Data parallel (`ol_ray.learner.distributed`): `model` is under DDP, `batch` is this rank's share of an update
    of `normaliser` samples and `data_parallel` its rank; the gradient DDP reduces on the last micro-batch is the
    whole update's, and `loss`, `sample_loss_mean`, `grad_norm` and `skipped` are the whole update's, the same on
    every rank; the per-sample figures are the share's. An out-of-memory error in a local micro-batch of any rank
    raises `GroupOutOfMemory` on every rank (`DataParallel.agree_on_memory`), none having stepped. Sharded
    (`ol_ray.learner.sharded`), every micro-batch goes through the sharded model, the ranks' plans padded to one
    count with weight-0 micro-batches. An out-of-memory error where the other ranks are inside the micro-batch's
    collectives (DDP's last micro-batch, any under FSDP) raises `UnagreedOutOfMemory` (the group fails).

    Long because it is one fixed sequence (forward and backward per micro-batch, the noise probe between
    them, clip, step) whose steps share the accumulated gradient and loss; split, it would pass them around.
    """
    if data_parallel is not None and noise_probe:
        raise ValueError("the gradient noise probe measures one learner's batch; it is not taken data parallel")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    size = normaliser or len(batch.labels)
    lengths = [len(ids) for ids in batch.input_ids]
    plan, first_half = micro_batch_plan(lengths, micro_batch_tokens, micro_batch_size, noise_probe)
    real = len(plan)  # FSDP: the plan is padded to every rank's count with weight-0 stand-ins (None)
    if data_parallel is not None:
        plan = data_parallel.even_plan(plan, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    meter = ActivationMeter(model) if measure_memory and device.type != "cuda" else None
    if measure_memory and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    per_sample_mb = 0.0
    stats: dict[str, Any] = {"micro_batches": real}
    loss_sum = torch.zeros((), device=device)
    sample_loss_sum = torch.zeros((), device=device)
    losses_before = np.zeros(len(batch.labels), dtype=np.float64)
    correct_before = np.zeros(len(batch.labels), dtype=np.float64)
    scale = data_parallel.world if data_parallel is not None else 1  # DDP averages over the ranks
    failed = 0  # data parallel: the size of the local micro-batch that ran out of memory on this rank
    for index, group in enumerate(plan):
        last = index == len(plan) - 1
        if data_parallel is not None and last and not data_parallel.sharded:  # before the reduction, once
            data_parallel.agree_on_memory(failed, device)
        if failed:
            continue
        padding = group is None
        group = np.zeros(1, dtype=np.int64) if padding else group
        inputs = pad_batch([batch.input_ids[i] for i in group], pad_id, device)
        weights = torch.as_tensor(0.0 if padding else batch.weights[group], dtype=torch.float32, device=device)
        # DDP: only the last micro-batch goes through DDP and reduces; the others accumulate in the module itself,
        # which starts no collective (DDP's forward may: its one-off bucket rebuild, so every rank must reach it at
        # the same point of the update). FSDP: every micro-batch goes through the sharded model
        local = not last and data_parallel is not None and not data_parallel.sharded
        try:
            with autocast(device, precision), (meter.hooks() if meter else contextlib.nullcontext()):
                logits = (model.module if local else model)(**inputs).logits
                per_sample = sample_losses(logits, inputs, batch, group, device)
            loss = (weights * per_sample).sum() / size
            (loss * scale).backward()
        except Exception as error:  # a local micro-batch's out-of-memory error waits for the agreement
            if not is_out_of_memory(error):
                raise
            if not local and data_parallel is not None:  # the others are inside this micro-batch's collectives
                raise UnagreedOutOfMemory(len(group)) from error
            if not local:
                raise
            failed = len(group)
            continue
        loss_sum += loss.detach()
        if padding:
            continue
        sample_loss_sum += 0.0 if batch.stand_in else per_sample.detach().sum()
        losses_before[group] = per_sample.detach().float().cpu().numpy()
        correct_before[group] = sample_correct(logits, inputs, batch, group, device).cpu().numpy()
        if meter is not None:  # activations, and their gradients during backward
            per_sample_mb = max(per_sample_mb, 2 * meter.bytes / 2**20 / len(group))
        if noise_probe and index == first_half - 1 and first_half < len(plan):
            half_size = sum(len(g) for g in plan[:first_half])
            stats.update(noise_small_sq=_grad_sq(params) * (size / half_size) ** 2, noise_small_size=half_size)
    core = data_parallel.core(model) if data_parallel is not None else model  # the model under DDP
    regulariser = penalty(core) if penalty is not None else None  # on every rank, to the reduced gradient
    if regulariser is not None:  # the data gradient's noise measure and loss leave the penalty out
        if "noise_small_sq" in stats:
            stats["noise_big_sq"] = _grad_sq(params)
        regulariser = regulariser.full_tensor() if hasattr(regulariser, "full_tensor") else regulariser  # FSDP
        regulariser.backward()
        stats["penalty"] = float(regulariser.detach())
    if measure_memory and device.type == "cuda" and real:
        largest = max(len(group) for group in plan[:real])
        per_sample_mb = (torch.cuda.max_memory_allocated(device) - allocated_before) / 2**20 / largest
    loss_total, sample_loss_total = float(loss_sum), float(sample_loss_sum)
    if data_parallel is not None:  # the whole update's loss, on every rank
        loss_total, sample_loss_total = data_parallel.sum_values([loss_total, sample_loss_total], device)
    grads = [p for p in params if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(grads, grad_clip if grad_clip > 0 else math.inf)
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
    stats.update(loss=loss_total, sample_loss_mean=sample_loss_total / size, grad_norm=float(grad_norm),
                 sample_losses=losses_before, sample_correct=correct_before)
    if "noise_small_sq" in stats:
        stats.setdefault("noise_big_sq", stats["grad_norm"] ** 2)  # the norm before clipping
    if measure_memory:
        stats["memory_per_sample_mb"] = per_sample_mb
    stats["skipped"] = not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
                            and math.isfinite(stats.get("penalty", 0.0)))
    if stats["skipped"]:  # a NaN or infinite loss or gradient: leave model and optimizer untouched
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
    return stats


def is_out_of_memory(error: BaseException) -> bool:
    """A device or host allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError); not a
    learner group that failed of one (it cannot retry: it restarts)."""
    if isinstance(error, (GroupFailed, UnagreedOutOfMemory)):
        return False
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, (RuntimeError, MemoryError)) and (
        isinstance(error, MemoryError) or "out of memory" in str(error) or "can't allocate memory" in str(error))


def lr_factor(update: int, warmup: int, decay: int, final_fraction: float) -> float:
    """Learning-rate multiplier at `update` (0-based): linear warmup, linear decay to `final_fraction`, hold."""
    if update < warmup:
        return (update + 1) / warmup
    if decay <= 0:
        return 1.0
    progress = min(1.0, (update - warmup + 1) / decay)
    return 1.0 - (1.0 - final_fraction) * progress


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it on this device (several times faster than the per-tensor loop)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
