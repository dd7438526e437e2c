"""The data-parallel learner group in real runs (learner.num_workers=2, gloo on CPU, the tiny model without
dropout): it trains exactly what one learner trains, its checkpoint resumes with one learner on the same path, and
a killed worker brings the group back from its newest checkpoint with every sample accounted for."""

import json
import os
import signal

import pytest
import ray

from ol_ray.config import load_config
from ol_ray.driver.cluster import learner_actor_name
from ol_ray.driver.pipeline import run_pipeline
from ol_ray.state.ledger import LEDGER_LOG

from conftest import no_actors_left
from data_files import write_sst2_tsv

LOCKSTEP = ["stream.text_field=sentence", "stream.window_size=48", "model.max_length=32", "scoring.batch_size=32",
            "scoring.max_lead_updates=0", "selection.strategy=entropy", "selection.pool_size=24",
            "batching.batch_size=8", "learner.lr=3e-3", "learner.torch_threads=1", "learner.num_cpus=0.5",
            "learner.publish_every=1", "eval.path=", "continual.drift_detector=none", "output.progress=false"]


def trained(run_dir):
    with open(os.path.join(run_dir, LEDGER_LOG), encoding="utf-8") as handle:
        return [json.loads(line)["trained"] for line in handle]


def updates(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        return [r for r in map(json.loads, handle) if r["kind"] == "update"]


def test_two_ranks_train_what_one_learner_trains_and_resume_sharded_and_as_one(ray_local, tiny_model_without_dropout,
                                                                                sst2_rows, tmp_path):
    """Lockstep (each pool scored with the weights of the update just made): 2 FSDP ranks on the first 48 rows,
    then the same run resumed from their checkpoint (the optimizer state the shards gathered) by 2 DDP ranks to 96
    rows, then by one learner to 144 rows, pick and lose what the single-process loop does on the 144 rows, update
    by update."""
    from ol_ray.bench.loop import read_stream, run_plain

    stream = write_sst2_tsv(tmp_path / "train.tsv", sst2_rows[:144])
    run_dir = tmp_path / "run"
    base = [f"stream.path={stream}", f"model.name_or_path={tiny_model_without_dropout}", *LOCKSTEP,
            f"output.run_dir={run_dir}"]
    sharded = run_pipeline(load_config(None, [*base, "stream.max_samples=48", "learner.num_workers=2",
                                              "learner.sharding=fsdp"]))
    assert sharded["updates"] == 2 and sharded["accounting_ok"] and sharded["learner_ranks"] == 2
    assert sharded["config"]["learner"]["sharding"] == "fsdp"
    copies = run_pipeline(load_config(None, [*base, "stream.max_samples=96", "learner.num_workers=2",
                                             "learner.sharding=ddp"]), resume=True)
    assert copies["restored_from"] and copies["updates"] == 4 and copies["accounting_ok"]
    assert copies["learner_ranks"] == 2
    last = run_pipeline(load_config(None, [*base, "stream.max_samples=144", "learner.num_workers=1"]), resume=True)
    assert last["restored_from"] and last["updates"] == 6 and last["accounting_ok"] and last["learner_ranks"] == 1
    assert last["samples_read"] == 144 and no_actors_left() == []

    (tmp_path / "plain").mkdir()
    cfg = load_config(None, [*base, "stream.max_samples=144"])
    _, plain_updates = run_plain(cfg, read_stream(cfg, 144, 0.0, 0), chunk=24, run_dir=str(tmp_path / "plain"))
    assert trained(run_dir) == trained(tmp_path / "plain")  # the same picks, update by update
    assert [r["loss"] for r in updates(run_dir)] == pytest.approx([r["loss"] for r in plain_updates], rel=1e-4)
    assert [r["grad_norm"] for r in updates(run_dir)] == pytest.approx([r["grad_norm"] for r in plain_updates],
                                                                       rel=1e-3)


def test_a_killed_worker_restarts_the_group_from_its_checkpoint(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    """A worker of a sharded group (FSDP) killed mid-run: the group fails, rank 0 restarts and forms a new group
    from the newest checkpoint (optimizer state scattered to the new shards, EWC state cut into them), the driver
    replays from there, rank 0's full copy still equals the shards two updates past where the old group stopped,
    and every sample read is accounted for once; evaluation, replay and EWC run throughout."""
    from tests.bench.test_faults import assert_balanced, in_thread, records, result_of, small_config, wait_for

    stream = write_sst2_tsv(tmp_path / "train.tsv", sst2_rows[:450])
    dev = write_sst2_tsv(tmp_path / "dev.tsv", sst2_rows[-100:])
    run_dir = str(tmp_path / "run")
    cfg = small_config(tiny_model_dir, stream, run_dir, "learner.num_workers=2", "learner.group_timeout_s=60",
                       "learner.sharding=fsdp",
                       f"eval.path={dev}", "eval.every_updates=5",
                       "continual.replay_size=64", "continual.replay_fraction=0.25", "continual.ewc_lambda=10",
                       "continual.ewc_every_updates=4")
    thread, box = in_thread(run_pipeline, cfg)
    learner = wait_for(lambda: sum(r["kind"] == "checkpoint" for r in records(run_dir)) >= 1
                       and ray.get_actor(learner_actor_name(run_dir)), what="a checkpoint")
    first = ray.get(learner.group_info.remote())
    os.kill(first["worker_pids"][0], signal.SIGKILL)
    again = wait_for(lambda: _group_after(learner, first), timeout=120, what="a new group two updates on")
    for sums in again["parameter_sums"][1:]:  # the new shards, gathered, hold rank 0's weights
        assert sums == pytest.approx(again["parameter_sums"][0], rel=1e-6)
    summary = result_of(thread, box)
    assert summary["learner_restarts"] == 1
    assert_balanced(summary, 450)
    kinds = {r["kind"] for r in records(run_dir)}
    assert "ewc_refresh" in kinds and any(r.get("replayed") for r in records(run_dir) if r["kind"] == "update")
    assert summary["dev_accuracy"] is not None
    assert no_actors_left() == []


def _group_after(learner, old):
    """The group's info once a new group (other worker processes) has made two updates past where the old one
    stood (its workers' optimizer state then counts); None before."""
    try:
        info = ray.get(learner.group_info.remote(), timeout=5)
    except ray.exceptions.RayError:
        return None
    fresh = info and info["worker_pids"] != old["worker_pids"] and info["updates"] >= old["updates"] + 2
    return info if fresh else None


def test_the_groups_ranks_are_counted_against_the_cluster_before_it_starts(ray_local):
    """3 ranks of 1 CPU do not fit the suite's 2-CPU Ray: an error naming the total, before any actor starts."""
    from ol_ray.driver.cluster import check_resources, learner_placement
    from ol_ray.driver.feeding import PipelineError

    cfg = load_config(None, ["stream.path=x.tsv", "learner.num_workers=3", "learner.num_cpus=1"])
    with pytest.raises(PipelineError, match="ask for 3 CPU"):
        check_resources(cfg, strict=True)
    check_resources(load_config(None, ["stream.path=x.tsv", "learner.num_workers=2", "learner.num_cpus=1"]), True)
    assert learner_placement(load_config(None, ["stream.path=x.tsv"])) is None  # one learner: no placement group


def test_a_workers_unagreed_out_of_memory_error_names_the_micro_batch_to_halve(ray_local):
    """A rank that ran out of memory inside the group's collectives answers with the error; rank 0 reads the failed
    micro-batch's size from it (the restarted group halves it), and nothing from other failures."""
    from ol_ray.learner.distributed import UnagreedOutOfMemory
    from ol_ray.learner.group import LearnerGroup

    @ray.remote(num_cpus=0)
    def fail(error):
        raise error

    assert LearnerGroup._unagreed(RuntimeError("gloo: connection closed"), [fail.remote(UnagreedOutOfMemory(6))]) == 6
    assert LearnerGroup._unagreed(UnagreedOutOfMemory(4), []) == 4  # rank 0's own
    assert LearnerGroup._unagreed(RuntimeError("gloo"), [fail.remote(ValueError("another bug"))]) == 0
