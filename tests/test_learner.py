import copy
import os

import numpy as np
import pytest
import torch
from torch import nn

from ol_ray.checkpoint import latest_checkpoint, load_checkpoint
from ol_ray.config import ModelConfig, load_config
from ol_ray.learner import OnlineLearner, TrainBatch, concat_columns, lr_factor, weighted_step
from ol_ray.models import load_model
from ol_ray.tokenization import tokenize_texts

CPU = torch.device("cpu")


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(scope="module")
def batch(tiny_model_dir, sst2_rows):
    input_ids, _ = tokenize_texts([row[0] for row in sst2_rows[:16]], tiny_model_dir, 64)
    return TrainBatch(input_ids, np.array([int(row[1]) for row in sst2_rows[:16]]), np.ones(16, dtype=np.float32))


def sgd_delta(model, batch, **kwargs):
    model = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = weighted_step(model, optimizer, batch, 0, CPU, **kwargs)
    return [p.detach() - b for p, b in zip(model.parameters(), before)], stats


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return no_dropout(load_model(ModelConfig(name_or_path=tiny_model_dir, seed=5)))


def test_loss_is_weighted_sum_over_batch_size(model, batch):
    weights = np.linspace(0.5, 2.0, 16).astype(np.float32)
    with torch.no_grad():
        from ol_ray.tokenization import pad_batch

        logits = model(**pad_batch(batch.input_ids, 0, CPU)).logits
        per_sample = torch.nn.functional.cross_entropy(logits, torch.as_tensor(batch.labels), reduction="none")
    _, stats = sgd_delta(model, TrainBatch(batch.input_ids, batch.labels, weights))
    assert stats["loss"] == pytest.approx(float((torch.as_tensor(weights) * per_sample).sum() / 16), rel=1e-5)
    assert stats["sample_loss_mean"] == pytest.approx(float(per_sample.mean()), rel=1e-5)


def test_micro_batches_give_the_same_update(model, batch):
    whole, _ = sgd_delta(model, batch, micro_batch_tokens=0)
    parts, _ = sgd_delta(model, batch, micro_batch_tokens=24)
    for a, b in zip(whole, parts):
        assert torch.allclose(a, b, atol=1e-6)


def test_weights_scale_the_gradient(model, batch):
    ones, _ = sgd_delta(model, batch)
    twos, _ = sgd_delta(model, TrainBatch(batch.input_ids, batch.labels, np.full(16, 2.0, dtype=np.float32)))
    zeros, _ = sgd_delta(model, TrainBatch(batch.input_ids, batch.labels, np.zeros(16, dtype=np.float32)))
    assert any(a.abs().sum() > 0 for a in ones)
    for a, b, z in zip(ones, twos, zeros):
        assert torch.allclose(2 * a, b, atol=1e-6) and torch.all(z == 0)


def test_lr_schedule():
    assert [lr_factor(u, 2, 0, 0.1) for u in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2 + 10 - 1, 2, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 2, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(2 + 4, 2, 10, 0.0) == pytest.approx(0.5)


def candidates(tiny_model_dir, rows, start, size, version=0):
    input_ids, _ = tokenize_texts([row[0] for row in rows[start:start + size]], tiny_model_dir, 64)
    packed = np.empty(size, dtype=object)
    packed[:] = input_ids
    return {"sample_id": np.array([f"s{i}" for i in range(start, start + size)], dtype=object),
            "input_ids": packed, "label": np.array([int(row[1]) for row in rows[start:start + size]]),
            "weight_version": np.full(size, version, dtype=np.int64), "text_truncated": np.zeros(size, dtype=bool),
            "tokens_truncated": np.zeros(size, dtype=bool)}


@pytest.fixture
def learner_cfg(tiny_model_dir, tmp_path, sst2_rows):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"{r[0]}\t{r[1]}\n" for r in sst2_rows[-200:]) + "broken row\n")
    return load_config(None, [
        "stream.path=unused", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
        "selection.pool_size=16", "batching.batch_size=8", "learner.lr=5e-3", "learner.torch_threads=1",
        f"eval.path={dev}", "eval.every_updates=4", "checkpoint.every_updates=3", "checkpoint.keep=2"])


def test_online_learner_accounts_trains_evaluates_and_checkpoints(learner_cfg, tiny_model_dir, sst2_rows, tmp_path):
    published = []
    learner = OnlineLearner(learner_cfg, str(tmp_path / "run"),
                            publish=lambda model, version, force: published.append((version, force)) or True)
    assert published == [(0, True)]
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 40))
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "eval" and records[0]["update"] == 0  # the starting model, evaluated once
    assert kinds.count("update") == 2  # 40 candidates = 2 full pools of 16, 8 buffered
    assert learner.state()["samples_buffered"] == 8
    assert learner.end_window(0, {"row": 40}) == []  # 2 updates < checkpoint.every_updates
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 40, 40, version=2))
    assert [r["update"] for r in records if r["kind"] == "update"] == [3, 4, 5]
    assert any(r["kind"] == "eval" and r["update"] == 4 for r in records)
    assert [r["staleness_mean"] for r in records if r["kind"] == "update"][-1] == 2.0  # version 2 used at update 4
    (checkpoint,) = learner.end_window(1, {"row": 80})
    assert checkpoint["kind"] == "checkpoint" and os.path.isdir(checkpoint["path"])
    state, training_state, buffered = load_checkpoint(checkpoint["path"])
    assert state["cursor"] == {"row": 80} and state["updates"] == 5 and state["samples_buffered"] == 0
    records = learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 80, 5))
    final = learner.finish()
    assert [r["kind"] for r in final] == ["update", "eval", "checkpoint"]
    state = learner.state()
    assert state["samples_received"] == 85
    assert state["samples_trained"] + state["samples_not_selected"] == 85
    assert state["samples_trained"] == 5 * 8 + 5  # five full pools of 16 give 8 each; the last 5 all train
    assert state["eval_rows_rejected"] == 1
    assert [v for v, _ in published] == list(range(0, 7))
    assert latest_checkpoint(str(tmp_path / "run" / "checkpoints")) == final[-1]["path"]


def test_learner_fits_a_small_set(learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, learner=dataclasses.replace(learner_cfg.learner, lr=1e-2))
    learner = OnlineLearner(cfg)
    losses = []
    pool = candidates(tiny_model_dir, sst2_rows, 0, 16)
    for _ in range(80):
        records = learner.add_candidates(pool)
        losses += [r["sample_loss_mean"] for r in records if r["kind"] == "update"]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_max_updates_stops_training_but_not_accounting(learner_cfg, tiny_model_dir, sst2_rows):
    import dataclasses

    cfg = dataclasses.replace(learner_cfg, learner=dataclasses.replace(learner_cfg.learner, max_updates=2))
    learner = OnlineLearner(cfg)
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 64))
    assert learner.done and learner.updates == 2
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 64, 10))
    learner.finish()
    state = learner.state()
    assert state["samples_trained"] == 16 and state["samples_trained"] + state["samples_not_selected"] == 74


def test_concat_columns_keeps_ragged_token_ids(tiny_model_dir, sst2_rows):
    joined = concat_columns([candidates(tiny_model_dir, sst2_rows, 0, 3), candidates(tiny_model_dir, sst2_rows, 3, 2)])
    assert joined["input_ids"].shape == (5,) and joined["input_ids"].dtype == object
    assert list(joined["sample_id"]) == ["s0", "s1", "s2", "s3", "s4"]
