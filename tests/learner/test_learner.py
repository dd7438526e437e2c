import json
import os
import time

import numpy as np
import pytest
import torch

from ol_ray.config import load_config
from ol_ray.learner.candidates import concat_columns
from ol_ray.learner.checkpointing import restore_newest
from ol_ray.learner.core import OnlineLearner
from ol_ray.models.loading import head_layer
from ol_ray.selection.base import STRATEGIES
from ol_ray.state.checkpoint import latest_checkpoint, load_checkpoint
from ol_ray.tasks.classification import score_samples

from data_files import candidates, write_sst2_tsv

CPU = torch.device("cpu")


@pytest.fixture
def learner_cfg(tiny_model_dir, tmp_path, sst2_rows):
    dev = tmp_path / "dev.tsv"
    write_sst2_tsv(dev, sst2_rows[-200:], "broken row\n")
    return load_config(None, [
        "stream.path=unused", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
        "selection.pool_size=16", "batching.batch_size=8", "learner.lr=5e-3", "learner.torch_threads=1",
        f"eval.path={dev}", "eval.every_updates=4", "checkpoint.every_updates=3", "checkpoint.keep=2"])


def test_online_learner_accounts_trains_evaluates_and_checkpoints(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    published = []
    learner = OnlineLearner(learner_cfg, str(tmp_path / "run"),
                            publish=lambda model, version, force=False, reset=False: published.append(version))
    assert published == [0]
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 40, window=0))
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "eval" and records[0]["update"] == 0  # the starting model, evaluated once
    assert kinds.count("update") == 2  # 40 candidates = 2 full pools of 16, 8 buffered
    assert learner.state()["samples_buffered"] == 8
    assert learner.end_window(0, {"row": 41}, read=41, quarantined=1) == []  # 2 updates < every_updates
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 40, 40, version=2, window=1))
    assert [r["update"] for r in records if r["kind"] == "update"] == [3, 4, 5]
    assert any(r["kind"] == "eval" and r["update"] == 4 for r in records)
    assert [r["staleness_mean"] for r in records if r["kind"] == "update"][-1] == 2.0  # version 2 used at update 4
    (checkpoint,) = learner.end_window(1, {"row": 80}, read=40, quarantined=0)
    assert checkpoint["kind"] == "checkpoint" and os.path.isdir(checkpoint["path"])
    state, _, buffered = load_checkpoint(checkpoint["path"])
    assert state["cursor"] == {"row": 80} and state["updates"] == 5 and len(buffered.get("sample_id", [])) == 0
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 80, 5, window=2))
    learner.end_window(2, {"row": 85}, read=5, quarantined=0)
    final = learner.finish()
    assert [r["kind"] for r in final] == ["update", "eval", "checkpoint"]
    state = learner.state()
    assert state["samples_received"] == 85
    assert state["samples_trained"] == 5 * 8 + 5  # five full pools of 16 give 8 each; the last 5 all train
    totals = state["ledger_totals"]
    assert totals["read"] == 86 == totals["quarantined"] + totals["not_selected"] + totals["trained"]
    assert state["ledger_balanced"] and totals["unresolved"] == 0
    assert state["eval_rows_rejected"] == 1
    assert published == list(range(0, 7))
    assert latest_checkpoint(str(tmp_path / "run" / "checkpoints")) == final[-1]["path"]
    log = [json.loads(line) for line in open(tmp_path / "run" / "ledger.jsonl")]
    assert [entry["update"] for entry in log] == list(range(1, 7))
    assert sum(len(entry["trained"]) for entry in log) == 45


def test_a_restarted_learner_resumes_from_its_checkpoint(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    run_dir = str(tmp_path / "run")
    first = OnlineLearner(learner_cfg, run_dir)
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 56, window=0))  # 3 updates, 8 buffered
    first.end_window(0, {"row": 56}, read=56, quarantined=0)  # checkpoint at update 3
    weights_at_checkpoint = first.model.classifier.weight.detach().clone()
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 56, 32, window=1))  # 2 more updates, then a crash
    trained_after = {i for entry in map(json.loads, open(os.path.join(run_dir, "ledger.jsonl")))
                     if entry["update"] > 3 for i in entry["trained"]}
    published = []
    second = OnlineLearner(learner_cfg, run_dir, publish=lambda model, version, force=False, reset=False:
                           published.append((version, reset)))
    point = second.resume_point()
    assert point["updates"] == 3 and point["windows_done"] == 1 and point["cursor"] == {"row": 56}
    assert published == [(3, True)]  # scorers must drop the versions published after the checkpoint
    assert torch.equal(second.model.classifier.weight, weights_at_checkpoint)
    assert second.state()["samples_buffered"] == 8  # the leftovers came back with the checkpoint
    second.add_candidates(candidates(tiny_model_dir, sst2_rows, 56, 32, window=1))  # the replayed window
    second.end_window(1, {"row": 88}, read=32, quarantined=0)
    second.finish()
    state = second.state()
    assert state["ledger_balanced"] and state["ledger_totals"]["read"] == 88
    assert state["samples_trained"] + state["samples_not_selected"] == 88
    assert 0 < state["samples_trained_twice"] <= len(trained_after)


def test_trained_twice_survives_two_crashes_before_the_next_checkpoint(learner_cfg, tiny_model_dir, sst2_rows,
                                                                       tmp_path):
    run_dir = str(tmp_path / "run")
    first = OnlineLearner(learner_cfg, run_dir)
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48))
    first.end_window(0, {"row": 48}, read=48, quarantined=0)  # checkpoint at update 3
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 48, 64, window=1))  # 4 updates, then a crash
    second = OnlineLearner(learner_cfg, run_dir)
    second.add_candidates(candidates(tiny_model_dir, sst2_rows, 48, 16, window=1))  # 1 update, then a crash
    third = OnlineLearner(learner_cfg, run_dir)
    third.add_candidates(candidates(tiny_model_dir, sst2_rows, 48, 64, window=1))
    third.end_window(1, {"row": 112}, read=64, quarantined=0)
    third.finish()
    state = third.state()
    assert state["ledger_balanced"]
    first_lineage = {i for entry in map(json.loads, open(os.path.join(run_dir, "ledger.rolled_back.jsonl")))
                     for i in entry.get("trained", [])}
    trained_by_third = {i for entry in map(json.loads, open(os.path.join(run_dir, "ledger.jsonl")))
                        if entry["update"] > 3 for i in entry.get("trained", [])}
    assert state["samples_trained_twice"] == len(first_lineage & trained_by_third) > 8  # more than the 2nd run's


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(learner_cfg, tiny_model_dir, sst2_rows, tmp_path,
                                                                  caplog):
    run_dir = str(tmp_path / "run")
    first = OnlineLearner(learner_cfg, run_dir)
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48, window=0))
    first.end_window(0, {"row": 48}, read=48, quarantined=0)
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 48, 48, window=1))
    newest = first.end_window(1, {"row": 96}, read=48, quarantined=0)[0]["path"]
    with open(os.path.join(newest, "model", "model.safetensors"), "r+b") as handle:
        handle.truncate(100)
    second = OnlineLearner(learner_cfg, run_dir)
    assert second.resume_point()["cursor"] == {"row": 48} and second.resume_point()["updates"] == 3
    assert "cannot resume from" in caplog.text


def checkpointed_run(learner_cfg, tiny_model_dir, sst2_rows, run_dir):
    """A learner that wrote one checkpoint (3 updates, window 0); returns the checkpoint's folder."""
    learner = OnlineLearner(learner_cfg, run_dir)
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48, window=0))
    return learner.end_window(0, {"row": 48}, read=48, quarantined=0)[0]["path"]


def test_a_restore_that_fails_for_another_reason_fails_loudly(learner_cfg, tiny_model_dir, sst2_rows, tmp_path,
                                                              monkeypatch):
    """A readable checkpoint whose restore raises (a code error, CUDA, out of memory) is no corrupt file: the error
    comes out, the run does not start over from the pretrained model."""
    run_dir = str(tmp_path / "run")
    checkpointed_run(learner_cfg, tiny_model_dir, sst2_rows, run_dir)

    def out_of_memory(self, state_dict):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.optim.AdamW, "load_state_dict", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        OnlineLearner(learner_cfg, run_dir)


def test_no_readable_checkpoint_fails_unless_starting_over_is_asked(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    import dataclasses

    from ol_ray.state.checkpoint import CheckpointError

    run_dir = str(tmp_path / "run")
    path = checkpointed_run(learner_cfg, tiny_model_dir, sst2_rows, run_dir)
    with open(os.path.join(path, "training_state.pt"), "r+b") as handle:  # same size, one byte changed
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="training_state.pt fails its checksum.*start_over_if_unreadable"):
        OnlineLearner(learner_cfg, run_dir)
    cfg = dataclasses.replace(learner_cfg, checkpoint=dataclasses.replace(learner_cfg.checkpoint,
                                                                          start_over_if_unreadable=True))
    fresh = OnlineLearner(cfg, run_dir)
    assert fresh.resume_point()["updates"] == 0 and fresh.resume_point()["restored_from"] is None


def test_duplicate_ids_are_quarantined_once_each(learner_cfg, tiny_model_dir, sst2_rows):
    rejected = []
    learner = OnlineLearner(learner_cfg, quarantine=rejected.extend)
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 4, ids=["a", "b", "c", "d"]))
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 4, 4, ids=["e", "b", "e", "f"], window=1))
    assert [(r["sample_id"], r["code"], r["window"]) for r in rejected] == [("b", "duplicate_id", 1),
                                                                            ("e", "duplicate_id", 1)]
    assert learner.state()["samples_received"] == 6


def test_a_non_finite_update_is_skipped_and_accounted(learner_cfg, tiny_model_dir, sst2_rows):
    from ol_ray.selection.base import Selection
    from ol_ray.selection.selector import make_strategy

    class PoisonOnce:  # a batch whose loss turns NaN
        poisoned = False
        uniform = make_strategy(learner_cfg.selection)

        def select(self, pool, batch_size, rng):
            selection = self.uniform.select(pool, batch_size, rng)
            if not self.poisoned:
                self.poisoned = True
                return Selection(selection.indices, np.full(len(selection.indices), np.nan, dtype=np.float32))
            return selection

    published = []
    learner = OnlineLearner(learner_cfg, publish=lambda model, version, force=False, reset=False:
                            published.append(version))
    learner.strategy = PoisonOnce()
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 16))
    assert [r["kind"] for r in records][-1] == "skipped_update"
    assert all(torch.equal(before[k], v) for k, v in learner.model.state_dict().items())  # model untouched
    assert learner.optimizer.state_dict()["state"] == {}  # optimizer untouched
    assert learner.updates == 0 and published == [0]  # nothing published
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 16, 16))
    learner.end_window(0, {}, read=32, quarantined=0)
    learner.finish()
    state = learner.state()
    assert state["nonfinite_updates"] == 1 and state["samples_nonfinite"] == 8 and state["updates"] == 1
    assert state["ledger_balanced"]


def test_learner_fits_a_small_set(learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, learner=dataclasses.replace(learner_cfg.learner, lr=3e-3))
    learner = OnlineLearner(cfg)
    rows = candidates(tiny_model_dir, sst2_rows, 0, 16)

    def loss_on_the_set():  # every one of the 16 rows, not only the uncertain half each update trains on
        head = head_layer(learner.model, 2)
        return float(np.mean(score_samples(learner.model, head, list(rows["input_ids"]), rows["label"],
                                           learner.pad_id, CPU, columns=("loss",))["loss"]))

    before = loss_on_the_set()
    for repeat in range(80):
        learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 16, ids=[f"r{repeat}-{i}" for i in range(16)]))
    assert loss_on_the_set() < 0.5 * before


def test_max_updates_stops_training_but_not_accounting(learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, learner=dataclasses.replace(learner_cfg.learner, max_updates=2))
    learner = OnlineLearner(cfg)
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 64))
    assert learner.done and learner.updates == 2
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 64, 10))
    learner.end_window(0, {}, read=74, quarantined=0)
    learner.finish()
    state = learner.state()
    assert state["samples_trained"] == 16 and state["samples_trained"] + state["samples_not_selected"] == 74
    assert state["ledger_balanced"]


def test_concat_columns_keeps_ragged_token_ids(tiny_model_dir, sst2_rows):
    joined = concat_columns([candidates(tiny_model_dir, sst2_rows, 0, 3), candidates(tiny_model_dir, sst2_rows, 3, 2)])
    assert joined["input_ids"].shape == (5,) and joined["input_ids"].dtype == object
    assert list(joined["sample_id"]) == ["s0", "s1", "s2", "s3", "s4"]


def test_a_stateful_policy_travels_with_checkpoints(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    class CountingPolicy:  # a policy with state, as adaptive policies will have
        def __init__(self):
            self.calls = 0

        def batch_size(self, context):
            self.calls += 1
            return 8

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    run_dir = str(tmp_path / "run")
    first = OnlineLearner(learner_cfg, run_dir)
    first.policy = CountingPolicy()
    first.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48))
    first.end_window(0, {"row": 48}, read=48, quarantined=0)
    second = OnlineLearner(learner_cfg)  # the configured (fixed) policy could not take this state: it is refused
    second.run_dir = run_dir
    restored = CountingPolicy()
    second.policy = restored
    restore_newest(second)
    assert restored.calls == 3


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_trains_from_real_scores_and_checkpoints_its_state(strategy, learner_cfg, tiny_model_dir,
                                                                         sst2_rows, tmp_path):
    import dataclasses

    selection = dataclasses.replace(learner_cfg.selection, strategy=strategy, mode="soft",
                                    mix={"diversity": 0.5, "badge": 0.5} if strategy == "mix" else {})
    cfg = dataclasses.replace(learner_cfg, selection=selection)
    run_dir = str(tmp_path / "run")
    learner = OnlineLearner(cfg, run_dir)
    pool = candidates(tiny_model_dir, sst2_rows, 0, 48)
    pool.update(score_samples(learner.model, head_layer(learner.model, 2), list(pool["input_ids"]), pool["label"],
                              learner.pad_id, learner.device))
    pool["irreducible_loss"] = pool["loss"] * 0.5  # a stand-in column (test_irreducible.py trains the real one)
    updates = [r for r in learner.add_candidates(pool) if r["kind"] == "update"]
    assert learner.updates == 3 and learner.ledger.totals()["trained"] == 24
    assert all(sum(r["selected_labels"]) == 8 and r["weight_max"] >= r["weight_mean"] > 0 for r in updates)
    learner.end_window(0, {"row": 48}, read=48, quarantined=0)
    resumed = OnlineLearner(cfg, run_dir)
    assert resumed.updates == 3
    assert resumed.strategy.state_dict() == learner.strategy.state_dict()


def test_out_of_memory_halves_the_micro_batch_and_retrains_the_same_samples(learner_cfg, tiny_model_dir, sst2_rows,
                                                                            tmp_path):
    """A step that runs out of memory above 3 samples per pass: the learner halves the micro-batch until it fits,
    trains exactly the samples it chose (the same update as a learner with room), and keeps the ceiling."""
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, learner=dataclasses.replace(learner_cfg.learner, micro_batch_tokens=0),
                              eval=dataclasses.replace(learner_cfg.eval, path=""))
    roomy = OnlineLearner(cfg)
    cramped = OnlineLearner(cfg, str(tmp_path / "run"))
    for module in [*roomy.model.modules(), *cramped.model.modules()]:  # the same update needs the same masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    original = cramped.model.forward

    def forward(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return original(*args, **kwargs)

    cramped.model.forward = forward
    records = cramped.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 32))
    roomy.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 32))
    ooms = [r for r in records if r["kind"] == "oom"]
    assert [(r["micro_batch"], r["ceiling"]) for r in ooms] == [(8, 4), (4, 2)]  # only the first update hit it
    assert [r["micro_batches"] for r in records if r["kind"] == "update"] == [4, 4]
    assert cramped.updates == roomy.updates == 2 and cramped.state()["oom_retries"] == 2
    assert cramped.ledger.totals() == roomy.ledger.totals()
    for a, b in zip(cramped.model.parameters(), roomy.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    cramped.end_window(0, {"row": 32}, read=32, quarantined=0)
    assert cramped.ledger.balanced()  # read = not selected + trained, nothing lost to the errors
    cramped.finish()  # checkpoints
    assert OnlineLearner(cfg, str(tmp_path / "run")).oom_ceiling == 2
    # a learner group that failed of an out-of-memory error it could not retry leaves a ceiling for its restart:
    # the lower one wins, whichever it is
    from ol_ray.learner.checkpointing import save_memory_ceiling

    save_memory_ceiling(str(tmp_path / "run"), 1)
    assert OnlineLearner(cfg, str(tmp_path / "run")).oom_ceiling == 1
    save_memory_ceiling(str(tmp_path / "run"), 3)
    assert OnlineLearner(cfg, str(tmp_path / "run")).oom_ceiling == 2
    single = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, micro_batch_size=1))
    hopeless = OnlineLearner(single)
    hopeless.model.forward = lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one sample does not fit: nothing to halve
        hopeless.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 16))


@pytest.mark.parametrize("rule, factor", [("none", 1.0), ("linear", 2.0), ("sqrt", 2 ** 0.5)])
def test_learning_rate_follows_the_batch_size(rule, factor, learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    batching = dataclasses.replace(learner_cfg.batching, lr_scaling=rule, batch_size=8, min_batch_size=16,
                                   max_batch_size=32)
    cfg = dataclasses.replace(learner_cfg, batching=batching, eval=dataclasses.replace(learner_cfg.eval, path=""))
    learner = OnlineLearner(cfg)  # fixed at 8, clamped up to 16: twice the reference batch
    updates = [r for r in learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 64)) if r["kind"] == "update"]
    assert [r["batch_size"] for r in updates] == [16, 16] and [r["pool_size"] for r in updates] == [32, 32]
    assert updates[0]["lr"] == pytest.approx(cfg.learner.lr * factor)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.learner.lr)  # the schedule is untouched


def test_periodic_policy_updates_on_time_without_new_candidates(learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    batching = dataclasses.replace(learner_cfg.batching, policy="periodic", period_s=0.2, min_batch_size=2,
                                   max_batch_size=64)
    cfg = dataclasses.replace(learner_cfg, batching=batching, eval=dataclasses.replace(learner_cfg.eval, path=""))
    learner = OnlineLearner(cfg)
    learner.last_update_time = time.time()
    assert learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 10)) == []  # too early
    assert learner.tick() == []
    time.sleep(0.25)
    (update,) = learner.tick()  # on time: whatever has accumulated (10 candidates, 2 per sample)
    assert update["batch_size"] == 5 and update["pool_size"] == 10 and len(learner.buffer) == 0
    burst = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 10, 300))  # not yet due, but a burst
    assert [r["batch_size"] for r in burst if r["kind"] == "update"] == [64, 64] and len(learner.buffer) == 44


def test_adaptive_policy_gets_gradient_noise_from_every_update(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    import dataclasses

    batching = dataclasses.replace(learner_cfg.batching, policy="adaptive", cooldown_updates=2, min_batch_size=4,
                                   max_batch_size=32)
    cfg = dataclasses.replace(learner_cfg, batching=batching, eval=dataclasses.replace(learner_cfg.eval, path=""))
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 160))
    updates = [r for r in records if r["kind"] == "update"]
    assert all(r["noise_small_sq"] > 0 and r["noise_big_sq"] > 0 for r in updates)
    assert learner.policy.noise_scale() is not None and learner.policy.weight > 0
    assert all(4 <= r["batch_size"] <= 32 and r["pool_size"] == 2 * r["batch_size"] for r in updates)
    learner.end_window(0, {"row": 160}, read=160, quarantined=0)
    resumed = OnlineLearner(cfg, str(tmp_path / "run"))
    assert resumed.policy.state_dict() == learner.policy.state_dict()


def test_the_leftover_update_at_the_end_reaches_a_checkpoint(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    """A window end checkpoints, then the stream ends with candidates buffered: their update is checkpointed too,
    so a resumed run does not train them again."""
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, checkpoint=dataclasses.replace(learner_cfg.checkpoint, every_updates=1),
                              eval=dataclasses.replace(learner_cfg.eval, path=""))
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 20))
    assert [r["kind"] for r in learner.end_window(0, {"row": 20}, read=20, quarantined=0)] == ["checkpoint"]
    final = learner.finish()
    assert [r["kind"] for r in final] == ["update", "checkpoint"]
    resumed = OnlineLearner(cfg, str(tmp_path / "run"))
    assert resumed.updates == 2 and len(resumed.buffer) == 0 and resumed.ledger.totals()["trained_twice"] == 0


def test_a_checkpoint_from_before_the_hashed_ids_still_catches_repeats(learner_cfg, tiny_model_dir, sst2_rows,
                                                                       tmp_path):
    learner = OnlineLearner(learner_cfg, str(tmp_path / "run"))
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48, window=0))
    (checkpoint,) = learner.end_window(0, {"row": 48}, read=48, quarantined=0)
    os.remove(os.path.join(checkpoint["path"], "arrays.npz"))  # the old layout: the ids in state.json, as strings
    os.remove(os.path.join(checkpoint["path"], "manifest.json"))  # and no manifest yet
    with open(os.path.join(checkpoint["path"], "state.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    state["ledger"]["seen"] = [f"s{i}" for i in range(48)]
    with open(os.path.join(checkpoint["path"], "state.json"), "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    rejected = []
    resumed = OnlineLearner(learner_cfg, str(tmp_path / "run"), quarantine=rejected.extend)
    assert resumed.restored_from == checkpoint["path"] and resumed.updates == learner.updates
    resumed.add_candidates(candidates(tiny_model_dir, sst2_rows, 40, 16, window=1))  # s40-s47 repeat, s48-s55 new
    assert sorted(r["sample_id"] for r in rejected) == [f"s{i}" for i in range(40, 48)]
    assert all(r["code"] == "duplicate_id" for r in rejected)
