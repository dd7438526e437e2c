"""The data-parallel learner group (`learner.num_workers` N > 1): one update, decided once, taken by N ranks.

Rank 0 is the LearnerActor's own process: its `OnlineLearner` makes every decision (selection, weights, batch size,
learning rate, micro-batch ceiling) and alone evaluates, publishes, checkpoints and keeps the ledger, all from its
unwrapped model. Ranks 1..N-1 are `GroupWorker` actors, each with a copy of the model and optimizer. For an update,
rank 0 sends each worker its share of the batch (`ol_ray.learner.distributed.shares`), steps its own, and every rank
runs `weighted_step` under torch DDP over the whole batch's normaliser: the gradient DDP all-reduces is the single
learner's, and every rank steps the same optimizer state, so the copies stay equal without weights being sent. The
shares' per-sample figures come back to rank 0 with the workers' answers.

With `learner.sharding: fsdp` each rank, rank 0 included, holds an FSDP2 shard of the model and of the optimizer
state instead of a copy (`ol_ray.learner.sharded`); rank 0 also keeps the learner's full model, into which every
update's trainable weights are all-gathered, and a checkpoint gathers the optimizer state from the shards into the
single learner's format, so it resumes with any N and either sharding.

The ranks are gang-scheduled in a placement group the driver reserves (`ol_ray.driver.cluster`): bundle 0 holds
rank 0, bundle r rank r, each with the learner's num_cpus / num_gpus / resources, packed onto as few nodes as fit.
The workers start first (`start_workers`) and build their models while rank 0 loads and restores; when rank 0 is
ready they form a torch.distributed process group at its address (NCCL on GPUs, gloo on CPU); rank 0's weights are
broadcast when the model is wrapped, and rank 0 sends its optimizer and EWC state once (after a restore they are the
checkpoint's).

Ray Train's `TorchTrainer` runs a training function to completion over a dataset; this learner is long-lived and fed
call by call by the driver, with its decisions on rank 0. So the group follows the pattern of verl's and OpenRLHF's
worker groups: Ray actors in a placement group, a process group formed at rank 0, torch's own DDP all-reduce.

A worker that dies, or a collective that fails or waits past `learner.group_timeout_s`, fails the whole group
(`GroupFailed`): the LearnerActor then exits, Ray restarts it, and it forms a new group from the newest checkpoint
(the driver replays from there), as after a crash of a single learner.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import socket
from typing import Any, Callable, Optional

import numpy as np
import ray
import torch
import torch.distributed as dist
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ol_ray.config.schema import Config
from ol_ray.continual.ewc import ElasticWeights
from ol_ray.learner.checkpointing import save_memory_ceiling
from ol_ray.learner.distributed import (DataParallel, GroupFailed, GroupOutOfMemory, UnagreedOutOfMemory, share_of,
                                        shares)
from ol_ray.learner.sharded import Sharded, full
from ol_ray.learner.update import make_optimizer, weighted_step
from ol_ray.models.loading import device_for, load_model
from ol_ray.tasks.losses import TrainBatch

logger = logging.getLogger(__name__)
SHARE_FIGURES = ("sample_losses", "sample_correct", "memory_per_sample_mb", "skipped")


def rendezvous_address() -> str:
    """host:port where rank 0 hosts the process group's store: this node's address and a free port."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    return f"{ray.util.get_node_ip_address()}:{port}"


def join_group(address: str, rank: int, world: int, device: torch.device, cfg: Config) -> DataParallel:
    """Join the process group of `world` ranks whose store rank 0 hosts at `address`, as a DDP or an FSDP rank."""
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://{address}",
                            rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=cfg.learner.group_timeout_s))
    return Sharded() if cfg.learner.sharding == "fsdp" else DataParallel()


def start_workers(cfg: Config, placement: Any, run_dir: str) -> tuple[str, list[Any]]:
    """The rendezvous address and ranks 1..N-1, started in bundles 1..N-1 of `placement`. Each builds its model
    while rank 0 loads and restores, and joins the process group when rank 0 is ready (`LearnerGroup`)."""
    lcfg = cfg.learner
    address = rendezvous_address()
    remote = ray.remote(GroupWorker)
    return address, [remote.options(
        num_cpus=lcfg.num_cpus, num_gpus=lcfg.num_gpus, resources=lcfg.resources or None, max_restarts=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=rank),
    ).remote(cfg, rank, lcfg.num_workers, address, run_dir) for rank in range(1, lcfg.num_workers)]


def share_step(cfg: Config, model: Any, optimizer: torch.optim.Optimizer, share: TrainBatch, normaliser: int,
               pad_id: int, device: torch.device, limit: int, data_parallel: DataParallel,
               penalty: Optional[Callable[..., Any]]) -> dict[str, Any]:
    """This rank's part of an update: the weighted step on its share, over the whole batch's normaliser."""
    lcfg = cfg.learner
    return weighted_step(model, optimizer, share, pad_id, device, lcfg.grad_clip, lcfg.precision,
                         lcfg.micro_batch_tokens, limit, measure_memory=True, penalty=penalty, normaliser=normaliser,
                         data_parallel=data_parallel)


def load_penalty(ewc: Optional[ElasticWeights], state: Optional[dict[str, Any]], data_parallel: DataParallel,
                 model: Any, device: torch.device) -> None:
    """EWC's state (rank 0's, whole) into a rank's penalty, cut into the rank's shards when sharded."""
    if ewc is None or state is None:
        return
    ewc.load_state_dict(state, device)
    if data_parallel.sharded:
        ewc.fisher, ewc.anchor = (data_parallel.shard_like(model, part) for part in (ewc.fisher, ewc.anchor))


def parameter_sums(model: Any) -> list[float]:
    """Each parameter's sum (of the whole parameter: a shard's are all-gathered, on every rank together): equal on
    every rank while the group is in step."""
    return [float(full(p.detach()).double().sum()) for p in model.parameters()]


def on_cpu(value: Any) -> Any:
    """A (nested) state dict with its tensors on the CPU, to travel through Ray's object store."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


class GroupWorker:
    """Rank `rank` > 0 of the learner group: a model copy (or shard) and optimizer that step the shares rank 0
    sends. Create with ray.remote(...) in the group's placement group: it builds its model as it starts, and joins
    the process group when rank 0, ready, calls `join`."""

    def __init__(self, cfg: Config, rank: int, world: int, address: str, run_dir: str):
        torch.set_num_threads(cfg.learner.torch_threads)
        self.cfg, self.rank, self.world, self.address, self.run_dir = cfg, rank, world, address, run_dir
        self.device = device_for(cfg.learner.num_gpus)
        self.pad_id = 0  # rank 0's, with its state
        self.model = load_model(cfg.model, pretrained=False).to(self.device)  # rank 0's weights come with the wrap

    def join(self) -> None:
        """Join rank 0's process group and wrap the model (rank 0's weights broadcast), as rank 0 does."""
        cfg = self.cfg
        self.data_parallel = join_group(self.address, self.rank, self.world, self.device, cfg)
        self.model = self.data_parallel.wrap(self.model, self.device)
        self.optimizer = make_optimizer(self.data_parallel.core(self.model), cfg.learner.lr, cfg.learner.weight_decay,
                                        self.device)
        self.ewc = ElasticWeights(cfg.continual.ewc_lambda, cfg.continual.ewc_decay) if cfg.continual.ewc_lambda \
            else None

    def ping(self) -> int:
        return os.getpid()

    def load(self, state: dict[str, Any]) -> int:
        """Rank 0's pad id, optimizer state (scattered to the shards: with rank 0) and EWC state; returns this
        process's id."""
        self.pad_id = state["pad_id"]
        self.data_parallel.load_optimizer(self.model, self.optimizer, state["optimizer"])
        self.set_penalty(state.get("ewc"))
        return os.getpid()

    def set_penalty(self, state: Optional[dict[str, Any]]) -> None:
        load_penalty(self.ewc, state, self.data_parallel, self.model, self.device)

    def step(self, share: TrainBatch, normaliser: int, lrs: list[float], limit: int) -> dict[str, Any]:
        """Step this rank's share at rank 0's learning rates; its per-sample figures, or {"out_of_memory": size}
        when some rank ran out of memory (nothing stepped: rank 0 retries the update with smaller micro-batches).
        Sharded, the stepped parameters are then all-gathered for rank 0's full copy."""
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        try:
            stats = share_step(self.cfg, self.model, self.optimizer, share, normaliser, self.pad_id, self.device,
                               limit, self.data_parallel, self.ewc.penalty if self.ewc is not None else None)
            if not stats["skipped"]:  # sharded: the new weights, for rank 0's full copy
                self.data_parallel.gather_into(self.model, None)
        except GroupOutOfMemory as error:
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return {"out_of_memory": error.largest}
        except Exception as error:  # an unagreed out-of-memory error, or any other: the others wait in (or for) a
            if isinstance(error, UnagreedOutOfMemory) and error.size > 1:  # for the restart, whether or not rank 0
                with contextlib.suppress(OSError):  # lives to write it (NCCL's watchdog may end it first)
                    save_memory_ceiling(self.run_dir, error.size // 2)
            with contextlib.suppress(Exception):  # collective; leave the group so that theirs fails now (gloo at
                dist.destroy_process_group()  # once, NCCL after learner.group_timeout_s), then answer the error
            raise
        return {key: stats[key] for key in SHARE_FIGURES}

    def optimizer_state(self) -> None:
        """Sharded: this rank's part of gathering the optimizer state on rank 0 (for a checkpoint)."""
        self.data_parallel.gather_optimizer(self.model, self.optimizer)

    def parameter_sums(self) -> list[float]:
        return parameter_sums(self.data_parallel.core(self.model))


class LearnerGroup:
    """Rank 0's side of the group: joins the workers `start_workers` started, wraps rank 0's model in DDP (or shards
    a copy of it: FSDP) and sends its pad id, optimizer and EWC state; `step` takes an update on every rank."""

    def __init__(self, cfg: Config, model: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                 pad_id: int, workers: tuple[str, list[Any]], ewc_state: Optional[dict[str, Any]] = None):
        lcfg = cfg.learner
        self.cfg, self.optimizer, self.device, self.pad_id, self.plain = cfg, optimizer, device, pad_id, model
        self.world = world = lcfg.num_workers
        address, self.workers = workers
        try:
            joins = [worker.join.remote() for worker in self.workers]  # they rendezvous now that rank 0 is ready
            self.data_parallel = join_group(address, 0, world, device, cfg)
            sharded = self.data_parallel.sharded
            state = {"pad_id": pad_id, "optimizer": on_cpu(optimizer.state_dict()), "ewc": on_cpu(ewc_state)}
            if sharded:  # the learner's optimizer is not stepped from here on: its restored state off the device
                optimizer.state.clear()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            # DDP steps the learner's own model and optimizer; FSDP a sharded copy, with an optimizer of its own
            # (the learner's keeps the learning rate and is given the gathered state for checkpoints)
            self.model = self.data_parallel.wrap(copy.deepcopy(model) if sharded else model, device)
            self.stepper = make_optimizer(self.model, lcfg.lr, lcfg.weight_decay, device) if sharded else optimizer
            # sharded, rank 0 also takes its penalty from its shards (the learner's own reads the full model)
            self.ewc = ElasticWeights(cfg.continual.ewc_lambda, cfg.continual.ewc_decay) \
                if sharded and cfg.continual.ewc_lambda else None
            load_penalty(self.ewc, ewc_state, self.data_parallel, self.model, device)
            ray.get(joins, timeout=lcfg.group_timeout_s)
            shared = ray.put(state)
            loads = [worker.load.remote(shared) for worker in self.workers]
            if sharded:  # scattered on every rank together
                self.data_parallel.load_optimizer(self.model, self.stepper, state["optimizer"])
            self.pids = ray.get(loads, timeout=lcfg.group_timeout_s)
        except Exception as error:
            raise GroupFailed(f"the learner group of {world} ranks did not form: {self._cause(error)}") from error
        logger.info("ol_ray: learner group of %d ranks formed at %s (%s, %s)", world, address, dist.get_backend(),
                    lcfg.sharding)

    def _cause(self, error: BaseException) -> str:
        """The workers' own failure, if one failed (their error explains rank 0's), else `error`."""
        for worker in self.workers:
            try:
                ray.get(worker.ping.remote(), timeout=1)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.RayError as failure:
                return str(failure).strip().splitlines()[-1]
        return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__

    def step(self, batch: TrainBatch, limit: int, penalty: Optional[Callable[..., Any]]) -> dict[str, Any]:
        """The update of `batch` on every rank, each on its share; the figures of the whole batch (per-sample ones in
        batch order, stand-ins left out). Raises GroupOutOfMemory when any rank ran out of memory (none stepped)."""
        size = len(batch.labels)
        positions = shares(size, len(self.workers) + 1)
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        for group, lr in zip(self.stepper.param_groups, lrs):
            group["lr"] = lr
        refs = [worker.step.remote(share_of(batch, part), size, lrs, limit)
                for worker, part in zip(self.workers, positions[1:])]
        out_of_memory = 0
        penalty = self.ewc.penalty if self.ewc is not None else penalty  # sharded: rank 0's shards' part
        try:
            stats = share_step(self.cfg, self.model, self.stepper, share_of(batch, positions[0]), size,
                               self.pad_id, self.device, limit, self.data_parallel, penalty)
            if not stats["skipped"]:  # sharded: rank 0's full copy takes the new weights
                self.data_parallel.gather_into(self.model, self.plain)
        except GroupOutOfMemory as error:
            out_of_memory = error.largest
        except Exception as error:
            raise GroupFailed(f"an update of the learner group failed: {self._cause(error)}",
                              out_of_memory=self._unagreed(error, refs)) from error
        answers = self._answers(refs)
        out_of_memory = max([out_of_memory, *(answer.get("out_of_memory", 0) for answer in answers)])
        if out_of_memory:
            raise GroupOutOfMemory(out_of_memory)
        figures = [stats, *(answer for answer, part in zip(answers, positions[1:]) if len(part))]
        for key in ("sample_losses", "sample_correct"):
            stats[key] = np.concatenate([figure[key] for figure in figures])
        stats["memory_per_sample_mb"] = max(figure["memory_per_sample_mb"] for figure in figures)
        return stats

    @staticmethod
    def _unagreed(error: BaseException, refs: list[Any]) -> int:
        """The size of the micro-batch whose out-of-memory error failed the group, on rank 0 or on a worker that
        answered by now; 0 when the failure was no such error."""
        if isinstance(error, UnagreedOutOfMemory):
            return error.size
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=5)  # a worker that left the group has answered
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as failure:
                if isinstance(failure.cause, UnagreedOutOfMemory):
                    return failure.cause.size
            except ray.exceptions.RayError:
                continue
        return 0

    def _answers(self, refs: list[Any]) -> list[dict[str, Any]]:
        try:
            return ray.get(refs, timeout=self.cfg.learner.group_timeout_s)
        except ray.exceptions.RayError as error:
            raise GroupFailed(f"a worker of the learner group failed: {self._cause(error)}") from error

    def set_penalty(self, state: dict[str, Any]) -> None:
        """EWC's new Fisher estimate and anchor, for every worker's next update (calls run in order)."""
        ref = ray.put(on_cpu(state))
        for worker in self.workers:
            worker.set_penalty.remote(ref)
        load_penalty(self.ewc, state, self.data_parallel, self.model, self.device)

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer state, in the single learner's format (for a checkpoint): rank 0's own under DDP, gathered
        from the shards (on every rank together) under FSDP."""
        if not self.data_parallel.sharded:
            return self.optimizer.state_dict()
        refs = [worker.optimizer_state.remote() for worker in self.workers]
        try:
            state = self.data_parallel.gather_optimizer(self.model, self.stepper)
        except Exception as error:
            raise GroupFailed(f"gathering the optimizer state failed: {self._cause(error)}") from error
        self._answers(refs)
        return state

    def parameter_sums(self) -> list[list[float]]:
        """Each rank's parameter sums (FSDP: the shards' gathered), after rank 0's full copy: all equal while the
        group is in step."""
        refs = [worker.parameter_sums.remote() for worker in self.workers]
        try:
            sharded = [parameter_sums(self.model)] if self.data_parallel.sharded else []
        except Exception as error:
            raise GroupFailed(f"gathering the parameters failed: {self._cause(error)}") from error
        return [parameter_sums(self.plain), *sharded, *self._answers(refs)]
