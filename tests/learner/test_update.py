"""The weighted update as a plain function: normalisation, weights, micro-batches and gradient accumulation,
the gradient-noise probe and the memory measurement the batch policies read."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import tokenize_texts
from ol_ray.learner.update import ActivationMeter, is_out_of_memory, lr_factor, micro_batch_plan, weighted_step
from ol_ray.models.loading import load_model
from ol_ray.tasks.losses import TrainBatch

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
        from ol_ray.data.tokenization import pad_batch

        logits = model(**pad_batch(batch.input_ids, 0, CPU)).logits
        per_sample = torch.nn.functional.cross_entropy(logits, torch.as_tensor(batch.labels), reduction="none")
    _, stats = sgd_delta(model, TrainBatch(batch.input_ids, batch.labels, weights), micro_batch_tokens=24)
    assert stats["loss"] == pytest.approx(float((torch.as_tensor(weights) * per_sample).sum() / 16), rel=1e-5)
    assert stats["sample_loss_mean"] == pytest.approx(float(per_sample.mean()), rel=1e-5)
    # test-then-train, in batch order across micro-batches: each sample's loss and prediction before the step
    assert np.allclose(stats["sample_losses"], per_sample.numpy(), rtol=1e-5)
    assert np.array_equal(stats["sample_correct"], (logits.argmax(dim=-1).numpy() == batch.labels).astype(float))


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


def test_accumulated_micro_batches_give_the_same_update_as_one_big_batch(model, batch):
    weights = np.linspace(0.2, 3.0, 16).astype(np.float32)  # non-uniform weights: the normalisation must stay B
    weighted = TrainBatch(batch.input_ids, batch.labels, weights)
    whole, whole_stats = sgd_delta(model, weighted, micro_batch_tokens=0)
    for size in (1, 3, 8):
        parts, stats = sgd_delta(model, weighted, micro_batch_tokens=0, micro_batch_size=size)
        assert stats["micro_batches"] == -(-16 // size)
        assert stats["loss"] == pytest.approx(whole_stats["loss"], rel=1e-5)
        for a, b in zip(whole, parts):
            assert torch.allclose(a, b, atol=1e-6)


def test_the_noise_probe_measures_half_and_whole_batch_gradients_without_changing_the_update(model, batch):
    plain, _ = sgd_delta(model, batch)
    probed, stats = sgd_delta(model, batch, noise_probe=True)
    for a, b in zip(plain, probed):
        assert torch.allclose(a, b, atol=1e-6)
    assert stats["noise_small_size"] == 8 and stats["noise_big_sq"] == pytest.approx(stats["grad_norm"] ** 2)
    assert stats["noise_small_sq"] > 0 and stats["noise_big_sq"] > 0


def test_micro_batch_plan_interleaves_halves_of_similar_length():
    lengths = [5, 40, 7, 30, 9, 20, 11, 12]
    plan, first_half = micro_batch_plan(lengths, max_tokens=0, noise_probe=True)
    assert first_half == 1 and sorted(np.concatenate(plan).tolist()) == list(range(8))
    halves = [sorted(lengths[i] for i in group) for group in plan]
    assert halves == [[5, 9, 12, 30], [7, 11, 20, 40]]  # every other sample of the length order
    plan, first_half = micro_batch_plan(lengths, max_tokens=0, max_samples=3)
    assert [len(g) for g in plan] == [3, 3, 2] and first_half == 3


def test_memory_per_sample_is_measured_on_cpu(model, batch):
    _, stats = sgd_delta(model, batch, measure_memory=True)
    assert stats["memory_per_sample_mb"] > 0
    meter = ActivationMeter(model)
    with meter.hooks():
        model(input_ids=torch.ones((4, 8), dtype=torch.long))
    four = meter.bytes
    with meter.hooks():
        model(input_ids=torch.ones((8, 8), dtype=torch.long))
    assert meter.bytes == pytest.approx(2 * four, rel=0.05)  # activations grow with the batch, parameters excluded


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    # a learner group that failed of one cannot retry (its ranks are out of step): it restarts instead
    from ol_ray.learner.distributed import GroupFailed, UnagreedOutOfMemory

    assert not is_out_of_memory(GroupFailed("an update of the learner group failed: CUDA out of memory", 8))
    assert not is_out_of_memory(UnagreedOutOfMemory(8))
