"""Continual learning in the learner: replay mixed into updates, rescored and counted apart; EWC's penalty; the
prequential accuracy and drift reactions; the state surviving a checkpoint. (A pipeline over a two-phase stream is
in test_pipeline.py, beside the other whole-pipeline runs, sharing their Ray.)"""

import json

import numpy as np
import pytest
import torch

from ol_ray.config import load_config
from ol_ray.learner.core import OnlineLearner
from ol_ray.models.loading import load_model, output_layer
from ol_ray.tasks import task_for

from data_files import candidates

CPU = torch.device("cpu")


def learner_config(tiny_model_dir, *overrides):
    return load_config(None, [
        "stream.path=unused", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
        "selection.pool_size=8", "batching.batch_size=8", "learner.lr=5e-3", "learner.torch_threads=1",
        "checkpoint.every_updates=1", "continual.replay_size=12", "continual.replay_fraction=0.25", *overrides])


def scored(tiny_model_dir, pool):
    """Candidates as a scorer hands them over (statistics from the starting weights)."""
    model = load_model(load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}"]).model)
    head = output_layer(model, load_config(None, ["stream.path=x"]).model)
    return {**pool, **task_for("sequence_classification").score(model, head, pool, 0, CPU)}


def test_replay_fills_part_of_each_batch_and_is_counted_apart(tiny_model_dir, sst2_rows, tmp_path):
    learner = OnlineLearner(learner_config(tiny_model_dir), str(tmp_path / "run"))
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 48, window=0))
    updates = [r for r in records if r["kind"] == "update"]
    # nothing to replay before the first update; then 2 of 8 replayed and pools of 6 new: no new sample is dropped
    assert [r["replayed"] for r in updates] == [0] + [2] * 6 and all(r["batch_size"] == 8 for r in updates)
    assert [r["pool_size"] for r in updates] == [8] + [6] * 6
    assert updates[-1]["samples_trained"] == 8 + 6 * 6 and updates[-1]["samples_not_selected"] == 0
    assert updates[-1]["samples_replayed"] == 12 and updates[-1]["replay_loss_mean"] > 0
    assert len(learner.continual.replay) == 12  # full, and bounded
    learner.end_window(0, {"row": 48}, read=48, quarantined=0)
    state = learner.state()  # replayed samples are not new samples trained: the ledger's identity holds
    assert state["samples_trained"] + state["samples_buffered"] == 48 and state["samples_trained_twice"] == 0
    with open(tmp_path / "run" / "ledger.jsonl", encoding="utf-8") as handle:
        logged = [json.loads(line) for line in handle]
    for index, entry in enumerate(logged):  # only samples an earlier update trained are replayed
        earlier = {sample for before in logged[:index] for sample in before["trained"]}
        assert len(entry.get("replayed", [])) == (2 if index else 0) and set(entry.get("replayed", [])) <= earlier


def test_replay_buffer_and_ewc_survive_a_checkpoint(tiny_model_dir, sst2_rows, tmp_path):
    cfg = learner_config(tiny_model_dir, "continual.ewc_lambda=10", "continual.ewc_every_updates=2",
                         "continual.ewc_samples=4")
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 32, window=0))
    assert [r["reason"] for r in records if r["kind"] == "ewc_refresh"] == ["interval", "interval"]
    penalties = [r.get("penalty") for r in records if r["kind"] == "update"]
    assert penalties[:3] == [None, None, 0.0] and penalties[3] > 0  # none before the anchor, 0 at it, then held
    learner.end_window(0, {"row": 32}, read=32, quarantined=0)
    restored = OnlineLearner(cfg, str(tmp_path / "run"))
    assert list(restored.continual.replay.columns()["sample_id"]) == list(learner.continual.replay.columns()
                                                                          ["sample_id"])
    assert restored.continual.replay.seen == learner.continual.replay.seen
    name = next(iter(learner.continual.ewc.fisher))
    assert torch.equal(restored.continual.ewc.fisher[name], learner.continual.ewc.fisher[name])
    assert restored.continual.ewc.refreshes == 2 and restored.continual.replayed == learner.continual.replayed


def test_prequential_accuracy_and_drift_reactions(tiny_model_dir, sst2_rows, tmp_path):
    cfg = learner_config(tiny_model_dir, "continual.drift_threshold=1", "continual.drift_min_samples=5",
                         "continual.drift_delta=0", "continual.drift_reactions=[replay_boost, checkpoint]",
                         "continual.drift_replay_fraction=0.5", "checkpoint.every_updates=0")
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    first = scored(tiny_model_dir, candidates(tiny_model_dir, sst2_rows, 0, 16, window=0))
    learner.add_candidates(first)
    expected = float(np.mean(first["predicted"] == first["label"]))
    assert learner.state()["continual"]["prequential_accuracy"] == pytest.approx(expected)
    flipped = scored(tiny_model_dir, candidates(tiny_model_dir, sst2_rows, 16, 32, window=1))
    flipped["label"] = flipped["predicted"] ^ 1  # every prediction now wrong: the loss jumps
    flipped["loss"] = flipped["loss"] + 5.0
    records = learner.add_candidates(flipped)
    drifts = [r for r in records if r["kind"] == "drift"]
    assert drifts and drifts[0]["reactions"] == ["replay_boost", "checkpoint"]
    assert [r["replayed"] for r in records if r["kind"] == "update"][-1] == 4  # boosted: half of 8
    assert [r["kind"] for r in learner.end_window(1, {"row": 48}, 48, 0)] == ["checkpoint"]  # asked by the drift


def test_a_causal_lm_replays_with_target_masks_and_ewc(tiny_gpt2_dir, tmp_path):
    from data_files import lm_candidates
    from tiny_model import LM_SENTENCES

    cfg = load_config(None, [
        "stream.path=unused", f"model.name_or_path={tiny_gpt2_dir}", "model.kind=causal_lm", "selection.pool_size=8",
        "batching.batch_size=8", "learner.lr=1e-2", "learner.torch_threads=1", "continual.replay_size=8",
        "continual.replay_fraction=0.5", "continual.ewc_lambda=1", "continual.ewc_every_updates=2",
        "continual.ewc_samples=4"])
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    records = learner.add_candidates(lm_candidates(tiny_gpt2_dir, LM_SENTENCES * 7))
    updates = [r for r in records if r["kind"] == "update"]
    assert [r["replayed"] for r in updates][:4] == [0, 4, 4, 4] and all(np.isfinite(r["loss"]) for r in updates)
    assert any(r.get("penalty", 0) > 0 for r in updates) and np.isfinite(updates[-1]["replay_loss_mean"])
    assert "target_mask" in learner.continual.replay.columns()


def test_a_restored_learner_continues_exactly_and_a_phase_closes_once(tiny_model_dir, sst2_rows, tmp_path):
    import shutil

    cfg = learner_config(tiny_model_dir, "continual.ewc_lambda=10", "continual.ewc_every_updates=2",
                         "continual.ewc_samples=4", "learner.lr=1e-3")
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    learner.begin_phase("first")
    learner.add_candidates(scored(tiny_model_dir, candidates(tiny_model_dir, sst2_rows, 0, 30, window=0)))
    (checkpoint,) = learner.end_window(0, {"row": 30}, read=30, quarantined=0)
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    restored = OnlineLearner(cfg, str(tmp_path / "copy"))
    assert restored.resume_point()["phase"] == "first" and restored.continual.replayed == learner.continual.replayed
    later = scored(tiny_model_dir, candidates(tiny_model_dir, sst2_rows, 30, 24, window=1))
    rng = torch.get_rng_state()  # the checkpoint's (restored into the process-wide RNG both learners share)
    original_records = learner.begin_phase("second") + learner.add_candidates(later)
    torch.set_rng_state(rng)
    restored_records = restored.begin_phase("second") + restored.add_candidates(later)
    keys = ("update", "loss", "replayed", "penalty", "prequential_accuracy", "samples_trained")
    assert [{k: r.get(k) for k in keys} for r in original_records if r["kind"] == "update"] == \
        [{k: r.get(k) for k in keys} for r in restored_records if r["kind"] == "update"]
    assert original_records[0]["kind"] == "update" and original_records[0]["pool_size"] == 4  # the first phase's
    # 30 candidates left 4 in the buffer: trained before the second phase begins
    learner.finish()
    closed = dict(learner.continual.phases[-1])
    assert closed["prequential_accuracy"] is not None
    again = OnlineLearner(cfg, str(tmp_path / "run"))  # restored from the final checkpoint, finished again
    again.finish()
    assert again.continual.phases[-1] == closed  # the closed phase keeps its figures
