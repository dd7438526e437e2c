"""GPU paths: device placement, bf16 autocast for scoring and the update, measured memory per sample. Skipped
where torch sees no GPU."""

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import tokenize_texts
from ol_ray.learner.update import weighted_step
from ol_ray.models.loading import head_layer, load_model
from ol_ray.tasks.classification import score_samples
from ol_ray.tasks.losses import TrainBatch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_scoring_matches_fp32_on_gpu(tiny_model_dir, sst2_rows):
    device = torch.device("cuda")
    model = load_model(ModelConfig(name_or_path=tiny_model_dir)).to(device).eval()
    input_ids, _ = tokenize_texts([r[0] for r in sst2_rows[:32]], tiny_model_dir, 64)
    labels = np.array([int(r[1]) for r in sst2_rows[:32]])
    full = score_samples(model, head_layer(model, 2), input_ids, labels, 0, device, "fp32")
    half = score_samples(model, head_layer(model, 2), input_ids, labels, 0, device, "bf16")
    assert np.allclose(full["loss"], half["loss"], atol=0.05)
    assert np.mean(full["predicted"] == half["predicted"]) > 0.9


def gpu_model_and_batch(tiny_model_dir, sst2_rows):
    """The tiny model on the GPU, an AdamW over it, and 32 SST-2 samples."""
    model = load_model(ModelConfig(name_or_path=tiny_model_dir)).to(torch.device("cuda"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    input_ids, _ = tokenize_texts([r[0] for r in sst2_rows[:32]], tiny_model_dir, 64)
    batch = TrainBatch(input_ids, np.array([int(r[1]) for r in sst2_rows[:32]]), np.ones(32, dtype=np.float32))
    return model, optimizer, batch


def test_weighted_step_on_gpu_with_bf16(tiny_model_dir, sst2_rows):
    model, optimizer, batch = gpu_model_and_batch(tiny_model_dir, sst2_rows)
    stats = weighted_step(model, optimizer, batch, 0, torch.device("cuda"), grad_clip=1.0, precision="bf16")
    assert np.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    assert next(model.parameters()).device.type == "cuda"


def test_resource_policy_reads_measured_gpu_memory(tiny_model_dir, sst2_rows):
    """On a GPU the step's peak memory per sample is measured and the fit estimate follows free memory."""
    from ol_ray.batching.policies import fitting_batch
    from ol_ray.observe.monitor import own_memory

    device = torch.device("cuda")
    model, optimizer, batch = gpu_model_and_batch(tiny_model_dir, sst2_rows)
    stats = weighted_step(model, optimizer, batch, 0, device, measure_memory=True)
    assert stats["memory_per_sample_mb"] > 0
    snapshot = {"learner_" + k: v for k, v in own_memory(device).items()}
    fit = fitting_batch(snapshot, stats["memory_per_sample_mb"], 0.2, 0.0)
    smaller = fitting_batch({**snapshot, "learner_gpu_free_mb": snapshot["learner_gpu_free_mb"] / 2},
                            stats["memory_per_sample_mb"], 0.2, 0.0)
    assert fit > 32 and smaller < fit


def test_a_causal_lm_scores_and_steps_in_bf16_on_gpu(tiny_llama_dir):
    from ol_ray.data.tokenization import tokenize_lm
    from ol_ray.models.loading import output_layer
    from ol_ray.tasks.causal_lm import score_lm_samples

    from tiny_model import LM_SENTENCES

    device = torch.device("cuda")
    cfg = ModelConfig(name_or_path=tiny_llama_dir, kind="causal_lm")
    model = load_model(cfg).to(device)
    ids, _, masks, _ = tokenize_lm(LM_SENTENCES, [""] * 5, [""] * 5, tiny_llama_dir, 64)
    full = score_lm_samples(model, output_layer(model, cfg), ids, masks, 0, device, "fp32")
    half = score_lm_samples(model, output_layer(model, cfg), ids, masks, 0, device, "bf16")
    assert np.allclose(full["loss"], half["loss"], rtol=0.05) and np.isfinite(half["grad_norm"]).all()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = weighted_step(model, optimizer, TrainBatch(ids, np.zeros(5, np.int64), np.ones(5, np.float32), masks), 0,
                          device, grad_clip=1.0, precision="bf16", measure_memory=True)
    assert np.isfinite(stats["loss"]) and stats["memory_per_sample_mb"] > 0


def test_ewc_fisher_and_penalty_stay_on_the_gpu_in_bf16(tiny_model_dir, sst2_rows):
    from ol_ray.continual.ewc import ElasticWeights, empirical_fisher

    model, optimizer, batch = gpu_model_and_batch(tiny_model_dir, sst2_rows)
    device = torch.device("cuda")
    ewc = ElasticWeights(strength=10.0)
    ewc.refresh(model, empirical_fisher(model, TrainBatch(batch.input_ids[:8], batch.labels[:8], batch.weights[:8]),
                                        0, device, "bf16"))
    assert all(value.is_cuda and value.dtype == torch.float32 for value in ewc.fisher.values())
    weighted_step(model, optimizer, batch, 0, device, precision="bf16")
    stats = weighted_step(model, optimizer, batch, 0, device, precision="bf16", penalty=ewc.penalty)
    assert stats["penalty"] > 0 and np.isfinite(stats["loss"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_nccl_ranks_take_the_single_learners_updates(tiny_model_without_dropout, tmp_path):
    """The gloo test of `tests/learner/test_distributed.py` with NCCL: 2 GPUs, one rank each, against one learner
    on the first GPU."""
    from tests.learner.test_distributed import check_two_ranks

    check_two_ranks(tiny_model_without_dropout, tmp_path, "nccl", torch.device("cuda", 0), tolerance=1e-4)
