"""Data-parallel updates on CPU with gloo, under DDP and under FSDP2: 2 ranks in 2 processes give the single
learner's update, to float tolerance, over 20 weighted updates with non-uniform weights, batches that do not divide
by 2 (one of a single sample), micro-batching (shares of different micro-batch counts), a regulariser (a DTensor
penalty under FSDP), a non-finite update that every rank skips together; under DDP also an out-of-memory error on
one rank that every rank retries together with smaller micro-batches; under FSDP also a LoRA model, the optimizer
state's round trip, and an out-of-memory error on one rank that fails both at once (it cannot be agreed on inside
the collectives)."""

import datetime
import os

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.learner.distributed import GroupOutOfMemory, shares
from ol_ray.learner.update import make_optimizer, micro_batch_plan, weighted_step
from ol_ray.models.loading import load_model
from ol_ray.tasks.losses import TrainBatch

from conftest import free_port

UPDATES = 20
SKIPPED_AT = 11  # this update has an infinite weight on a sample of rank 1's share
ALONE_AT = 3  # this update has one sample: rank 1 has none, and stands in with a sample of weight 0
UNEVEN_AT = 1  # this update's shares split into 1 and 2 micro-batches, where DDP rebuilds its buckets (a collective
#   in its second forward; gloo does not always catch ranks reaching it at different points, MiniLM hung on it)
CPU = torch.device("cpu")
TOKENS = 24  # micro-batches of at most this many padded tokens


def batches(seed=0, sizes=(5, 10)):
    """20 batches of 5 to 9 (`sizes`) samples of token ids (one of 1), with weights from 0.2 to 3 (one infinite)."""
    rng = np.random.default_rng(seed)
    out = []
    for update in range(UPDATES):
        size = 1 if update == ALONE_AT else int(rng.integers(*sizes))
        lengths = [3, 3, 11, 11] if update == UNEVEN_AT else rng.integers(3, 12, size=size)
        size = len(lengths)
        ids = [np.concatenate([[2], rng.integers(5, 60, size=int(length)), [3]]) for length in lengths]
        weights = rng.uniform(0.2, 3.0, size=size).astype(np.float32)
        if update == SKIPPED_AT:
            weights[-1] = np.inf
        out.append(TrainBatch(ids, rng.integers(0, 2, size=size), weights, None))
    return out


def penalty(model):
    """A regulariser of the kind EWC adds once per update."""
    return 0.01 * sum((p.float() ** 2).sum() for name, p in model.named_parameters() if "classifier" in name)


def train(model_dir, rank=0, world=1, data_parallel=None, sizes=(5, 10), device=CPU, regularised=True, lora=False):
    """20 updates; on rank 1 of a group, the first update whose share has a local micro-batch of several samples
    runs out of memory there once, and every rank retries it (as the learner does) with half that micro-batch."""
    torch.manual_seed(0)
    adapters = {"lora_r": 4, "lora_targets": ("query", "value")} if lora else {}
    model = load_model(ModelConfig(name_or_path=model_dir, num_labels=2, **adapters)).to(device)
    if data_parallel is not None:
        model = data_parallel.wrap(model, device)
    optimizer = make_optimizer(model, 3e-3, 0.01, device)
    records, ooms, limit = [], [], 0
    for update, batch in enumerate(batches(sizes=sizes)):
        share = batch if data_parallel is None else batch_share(batch, rank, world)
        hook = None  # FSDP: an out-of-memory error inside a micro-batch's collectives fails the group instead
        if data_parallel is not None and not data_parallel.sharded and update == oom_update(sizes, world) \
                and rank == 1:
            hook = model.module.register_forward_pre_hook(out_of_memory_above_one, with_kwargs=True)
        while True:
            try:
                stats = weighted_step(model, optimizer, share, 0, device, grad_clip=1.0, micro_batch_tokens=TOKENS,
                                      micro_batch_size=limit, penalty=penalty if regularised else None,
                                      normaliser=len(batch.labels),
                                      data_parallel=data_parallel)
                break
            except GroupOutOfMemory as error:
                optimizer.zero_grad(set_to_none=True)
                ooms.append((update, error.largest))
                limit = error.largest // 2
                hook.remove() if hook is not None else None
        records.append((stats["loss"], stats["grad_norm"], stats["skipped"], stats["sample_losses"]))
    return model, records, ooms


def oom_update(sizes, world):
    """The first update whose rank-1 share splits into micro-batches, the first of them of several samples."""
    for update, batch in enumerate(batches(sizes=sizes)):
        share = batch_share(batch, 1, world)
        plan, _ = micro_batch_plan([len(ids) for ids in share.input_ids], TOKENS)
        if update != SKIPPED_AT and len(plan) > 1 and len(plan[0]) > 1:
            return update
    raise AssertionError("no update splits rank 1's share")


def out_of_memory_above_one(module, args, kwargs):
    if kwargs["input_ids"].shape[0] > 1:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")


def batch_share(batch, rank, world):
    from ol_ray.learner.distributed import share_of

    return share_of(batch, shares(len(batch.labels), world)[rank])


def rank_main(rank, world, port, model_dir, out_dir, backend="gloo"):
    import torch.distributed as dist

    from ol_ray.learner.distributed import DataParallel
    from ol_ray.learner.sharded import Sharded, full

    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else CPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))  # ranks out of step fail, not hang
    try:
        model, records, ooms = train(model_dir, rank, world, DataParallel(), device=device)
        torch.save({"state": model.module.cpu().state_dict(), "records": records, "ooms": ooms},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        model, records, _ = train(model_dir, rank, world, Sharded(), device=device)
        state = {name: full(value).cpu() for name, value in model.state_dict().items()}  # every shard gathered
        torch.save({"state": state, "records": records}, os.path.join(out_dir, f"rank{rank}-fsdp.pt"))
        model, records, _ = train(model_dir, rank, world, Sharded(), device=device, lora=True)
        state = {name: full(value).cpu() for name, value in model.state_dict().items()}
        torch.save({"state": state, "records": records}, os.path.join(out_dir, f"rank{rank}-fsdp-lora.pt"))
        torch.save(optimizer_round_trip(model_dir, rank, device), os.path.join(out_dir, f"rank{rank}-optim.pt"))
        torch.save(sharded_ewc(model_dir, device), os.path.join(out_dir, f"rank{rank}-ewc.pt"))
        if backend == "gloo":  # NCCL cannot fail rank 0 at once: it waits out the timeout (docs/distributed.md)
            torch.save(unagreed_out_of_memory(model, rank, device), os.path.join(out_dir, f"rank{rank}-oom.pt"))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # a group a rank has left (the out-of-memory case) may not tear down cleanly
                pass


def optimizer_round_trip(model_dir, rank, device):
    """Under FSDP: a fresh optimizer's state gathered for a checkpoint without stepping it (torch's gather would
    initialise it with a step); a stepped one's gathered to rank 0 in the single learner's format, scattered into
    fresh shards and gathered again, unchanged."""
    import torch.distributed as dist

    from ol_ray.learner.sharded import Sharded

    def sharded():
        torch.manual_seed(0)
        model = Sharded().wrap(load_model(ModelConfig(name_or_path=model_dir, num_labels=2)).to(device), device)
        return model, make_optimizer(model, 3e-3, 0.01, device)

    model, optimizer = sharded()
    empty = Sharded().gather_optimizer(model, optimizer)
    untouched = not optimizer.state
    batch = batches()[0]
    weighted_step(model, optimizer, batch_share(batch, rank, 2), 0, device, micro_batch_tokens=TOKENS,
                  normaliser=len(batch.labels), data_parallel=Sharded())
    gathered = [Sharded().gather_optimizer(model, optimizer)]
    dist.broadcast_object_list(gathered, src=0)  # rank 0's, as a forming group sends it to every rank
    again_model, again_optimizer = sharded()
    Sharded().load_optimizer(again_model, again_optimizer, gathered[0])
    again = Sharded().gather_optimizer(again_model, again_optimizer)
    return {"untouched": untouched, "empty": None if empty is None else empty["state"], "gathered": gathered[0],
            "again": again}


def sharded_ewc(model_dir, device):
    """EWC under FSDP: a Fisher estimate and anchor made whole (as rank 0 makes them), cut into this rank's shards,
    give the whole model's penalty and, gathered, its gradient."""
    import copy

    from ol_ray.continual.ewc import ElasticWeights
    from ol_ray.learner.group import load_penalty
    from ol_ray.learner.sharded import Sharded, full

    torch.manual_seed(0)
    plain = load_model(ModelConfig(name_or_path=model_dir, num_labels=2)).to(device)
    model = Sharded().wrap(copy.deepcopy(plain), device)
    rng = torch.Generator().manual_seed(1)
    state = {"fisher": {n: torch.rand(p.shape, generator=rng) for n, p in plain.named_parameters()},
             "anchor": {n: p.detach() + 0.01 * torch.randn(p.shape, generator=rng) for n, p in plain.named_parameters()},
             "refreshes": 1}
    whole, shards = ElasticWeights(10.0, 0.5), ElasticWeights(10.0, 0.5)
    whole.load_state_dict(state, device)
    want = whole.penalty(plain)
    want.backward()
    load_penalty(shards, state, Sharded(), model, device)
    got = shards.penalty(model).full_tensor()
    got.backward()
    gathered = {name: full(p.grad) for name, p in model.named_parameters()}
    return {"want": float(want), "got": float(got),
            "gradients": all(torch.allclose(gathered[name], p.grad, atol=1e-6) for name, p in plain.named_parameters())}


def unagreed_out_of_memory(model, rank, device):
    """Under FSDP, rank 1 runs out of memory in a micro-batch: it raises UnagreedOutOfMemory and leaves the group,
    as a group worker does; rank 0, waiting in that micro-batch's collectives, fails at once, not after the
    process group's 30 s timeout. What each saw, and how long rank 0 took to see it."""
    import time

    import torch.distributed as dist

    from ol_ray.learner.distributed import UnagreedOutOfMemory
    from ol_ray.learner.sharded import Sharded

    if rank == 1:
        model.register_forward_pre_hook(out_of_memory_above_one, with_kwargs=True)
    optimizer = make_optimizer(model, 3e-3, 0.01, device)
    batch = batches()[0]
    started = time.monotonic()
    try:
        weighted_step(model, optimizer, batch_share(batch, rank, 2), 0, device, micro_batch_tokens=TOKENS,
                      normaliser=len(batch.labels), data_parallel=Sharded())
    except UnagreedOutOfMemory as error:
        dist.destroy_process_group()
        return {"error": "UnagreedOutOfMemory", "size": error.size}
    except Exception as error:
        return {"error": type(error).__name__, "seconds": time.monotonic() - started}
    return {"error": None}


def test_shares_are_contiguous_and_differ_by_at_most_one():
    assert [s.tolist() for s in shares(7, 2)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [len(s) for s in shares(2, 4)] == [1, 1, 0, 0]  # a rank may get none
    assert np.concatenate(shares(9, 4)).tolist() == list(range(9))


def test_two_gloo_ranks_take_the_single_learners_updates(tiny_model_without_dropout, tmp_path):
    check_two_ranks(tiny_model_without_dropout, tmp_path, "gloo")


def check_two_ranks(model_dir, tmp_path, backend, device=CPU, tolerance=1e-5):
    """2 ranks of `backend` (spawned processes) against 1 learner on `device`: the same updates and weights."""
    import torch.multiprocessing as mp

    mp.start_processes(rank_main, args=(2, free_port(), model_dir, str(tmp_path), backend), nprocs=2, join=True,
                       start_method="spawn")
    single, expected, _ = train(model_dir, device=device)
    single = single.cpu()
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    # rank 1's out-of-memory error reached rank 0 too: both retried the same update once, with the same limit
    assert ranks[0]["ooms"] == ranks[1]["ooms"] and len(ranks[0]["ooms"]) == 1
    assert ranks[0]["ooms"][0][0] == oom_update((5, 10), 2) and ranks[0]["ooms"][0][1] > 1
    check_same_updates(ranks, single, expected, tolerance)
    # FSDP: each rank held half of every block; their uneven micro-batch counts were padded to one
    check_same_updates([torch.load(tmp_path / f"rank{rank}-fsdp.pt", weights_only=False) for rank in (0, 1)],
                       single, expected, tolerance)
    # LoRA under FSDP: the adapters and the head train, sharded with the frozen weights
    single, expected, _ = train(model_dir, device=device, lora=True)
    check_same_updates([torch.load(tmp_path / f"rank{rank}-fsdp-lora.pt", weights_only=False) for rank in (0, 1)],
                       single.cpu(), expected, tolerance)
    # the optimizer state between the shards and rank 0: a fresh one untouched, a stepped one's round trip exact
    first, second = (torch.load(tmp_path / f"rank{rank}-optim.pt", weights_only=False) for rank in (0, 1))
    assert first["untouched"] and second["untouched"] and first["empty"] == {}
    gathered, again = first["gathered"], first["again"]
    assert sorted(gathered["state"]) == list(range(len(gathered["state"]))) and len(gathered["state"]) > 10
    for index, values in gathered["state"].items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(again["state"][index][key])), (index, key)
    for got in (torch.load(tmp_path / f"rank{rank}-ewc.pt", weights_only=False) for rank in (0, 1)):
        assert got["got"] == pytest.approx(got["want"], rel=1e-5) and got["want"] > 0 and got["gradients"]
    if backend != "gloo":
        return
    # an out-of-memory error inside FSDP's collectives on rank 1: it names its micro-batch (of several samples)
    # and leaves; rank 0 fails well before the 30 s timeout
    waited, failed = (torch.load(tmp_path / f"rank{rank}-oom.pt", weights_only=False) for rank in (0, 1))
    assert failed["error"] == "UnagreedOutOfMemory" and failed["size"] > 1
    assert waited["error"] is not None and waited["error"] != "UnagreedOutOfMemory" and waited["seconds"] < 15


def check_same_updates(ranks, single, expected, tolerance):
    for got in ranks:  # every rank: the whole update's loss, norm and skip decision, and the same weights
        for update, ((loss, norm, skipped, _), (want_loss, want_norm, want_skip, _)) in enumerate(
                zip(got["records"], expected)):
            assert skipped == want_skip == (update == SKIPPED_AT), update
            if not skipped:
                assert loss == pytest.approx(want_loss, rel=tolerance)
                assert norm == pytest.approx(want_norm, rel=10 * tolerance)
        for name, value in single.state_dict().items():
            assert torch.allclose(got["state"][name], value, atol=tolerance), name
    for update, (_, _, _, want) in enumerate(expected):  # the shares' per-sample losses, in rank order
        real = [rank for rank, share in enumerate(shares(len(want), 2)) if len(share)]
        got = np.concatenate([ranks[rank]["records"][update][3] for rank in real])
        assert np.allclose(got, want, atol=tolerance) and (update != ALONE_AT or real == [0]), update
