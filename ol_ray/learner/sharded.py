"""Sharded data-parallel updates with FSDP2 (`learner.sharding: fsdp`): N ranks hold 1/N of the parameters,
gradients and optimizer state each, and take the single learner's update together.

The update is the data-parallel one (`ol_ray.learner.distributed`): each rank's weighted loss of its share over the
whole batch's normaliser B, scaled by N, so that the reduce-scattered gradient is the single learner's

    sum_r grad( sum_{i in share_r} w_i L_i / B )  =  grad( sum_i w_i L_i / B ).

What differs is the communication. `fully_shard` (FSDP2, torch's DTensor-based FSDP) is applied to every transformer
block (the classes a Hugging Face model names in `_no_split_modules`) and to the root, so each block's parameters
are all-gathered for its forward and again for its backward, and its gradients reduce-scattered after it: every
micro-batch is a sequence of collectives. So every rank must run as many micro-batches as the others: the ranks
agree on the largest count (`even_plan`, one all-reduce) and a rank with fewer pads with micro-batches of one
sample at weight 0. An out-of-memory error inside a micro-batch leaves the other ranks inside a collective, so it
cannot be agreed on and retried as DDP's local micro-batches are: the group fails and restarts from its newest
checkpoint (`ol_ray.learner.group`). The gradient norm that clipping and the non-finite check read is the global
one (a DTensor norm, reduced over the ranks). EWC's Fisher estimate and anchor, estimated whole on rank 0, are cut
into each rank's shards (`shard_like`), so that its penalty and gradient are each rank's part of the whole.

Rank 0 keeps a full, plain copy of the weights for what it does alone (evaluation, replay rescoring, publishing,
checkpoints): after each update every rank all-gathers the trainable parameters, one at a time, and rank 0 copies
them into its copy (`gather_into`; with LoRA only the adapters, the rest never changes). A checkpoint gathers the
optimizer state on rank 0 (`gather_optimizer`) in the single learner's format, so it resumes with any N and either
sharding; a group that forms scatters it to the shards (`load_optimizer`).

Plain torch.distributed (gloo on CPU, NCCL on GPUs), callable without Ray.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from ol_ray.learner.distributed import DataParallel


def block_classes(model: nn.Module) -> set[str]:
    """The class names of the model's repeated blocks (a Hugging Face model's `_no_split_modules`, through a PEFT
    wrapper), each of which becomes an FSDP unit."""
    for candidate in (model, getattr(model, "base_model", None), getattr(getattr(model, "base_model", None),
                                                                        "model", None)):
        names = getattr(candidate, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def trainable_names(model: nn.Module) -> list[str]:
    """The trainable parameters' names, in the order the optimizer holds them (`make_optimizer`)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def full(value: Any) -> Any:
    """A DTensor's full tensor (an all-gather: every rank calls it), anything else as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def keyed_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter index (torch's) keyed by parameter name (torch.distributed's)."""
    return {"state": {names[index]: value for index, value in state["state"].items()},
            "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                             for group in state["param_groups"]]}


def keyed_by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The inverse of `keyed_by_name`."""
    index = {name: i for i, name in enumerate(names)}
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [index[n] for n in group["params"]]}
                             for group in state["param_groups"]]}


class Sharded(DataParallel):
    """A rank of the process group holding an FSDP2 shard of the model."""

    sharded = True

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` with rank 0's weights (broadcast, as DDP does), sharded in place: one FSDP unit per block and
        the root. The optimizer is made over the result (its parameters are the shards)."""
        from torch.distributed.device_mesh import init_device_mesh
        try:  # torch >= 2.6; 2.4 and 2.5 have FSDP2 under _composable (imported here: 0.8 s, for FSDP ranks only)
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # pragma: no cover - older torch
            from torch.distributed._composable.fsdp import fully_shard

        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, 0, group=self.group)
        mesh = init_device_mesh(device.type, (self.world,))
        classes = block_classes(model)
        for module in model.modules():
            if type(module).__name__ in classes:
                fully_shard(module, mesh=mesh)
        return fully_shard(model, mesh=mesh)

    def core(self, model: nn.Module) -> nn.Module:
        return model  # the sharded model is its own module

    def even_plan(self, plan: list[Any], device: torch.device) -> list[Any]:
        """`plan` padded to the largest micro-batch count of any rank (every micro-batch runs collectives)."""
        count = torch.tensor([len(plan)], dtype=torch.int64, device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=self.group)
        return plan + [None] * (int(count.item()) - len(plan))

    def gather_into(self, model: nn.Module, plain: Optional[nn.Module]) -> None:
        """Every rank: all-gather the trainable parameters one by one; rank 0 copies them into `plain`."""
        into = dict(plain.named_parameters()) if plain is not None else {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.requires_grad:
                    value = full(param)
                    if plain is not None:
                        into[name].copy_(value)  # a name rank 0's model lacks is an error, not a stale weight

    def shard_like(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Full tensors named like the model's parameters (EWC's Fisher estimate and anchor), each cut into this
        rank's shard of its parameter (no communication: every rank holds the full tensors)."""
        from torch.distributed.tensor import distribute_tensor

        params = dict(model.named_parameters())
        return {name: distribute_tensor(value.to(params[name].device), params[name].device_mesh,
                                        params[name].placements, src_data_rank=None)
                for name, value in tensors.items()}

    def gather_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Optional[dict[str, Any]]:
        """Every rank: the optimizer state gathered; on rank 0 in the single learner's format (by index, on the
        CPU), elsewhere None."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        if not optimizer.state:  # nothing stepped yet (the same on every rank); torch would initialise the state
            return {"state": {}, "param_groups": optimizer.state_dict()["param_groups"]} if self.rank == 0 else None
        state = get_optimizer_state_dict(model, optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return keyed_by_index(state, trainable_names(model)) if self.rank == 0 else None

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Every rank: the full optimizer state (the single learner's format) scattered to this rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        for group, saved in zip(optimizer.param_groups, state["param_groups"]):  # the schedule's keys included
            group.update({key: value for key, value in saved.items() if key != "params"})
        if not state["state"]:  # a fresh optimizer: nothing to scatter
            return
        set_optimizer_state_dict(model, optimizer, keyed_by_name(state, trainable_names(model)),
                                 options=StateDictOptions(full_state_dict=True))
