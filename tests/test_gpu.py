"""GPU paths: device placement, bf16 autocast for scoring and the update. Skipped where torch sees no GPU."""

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.learner import TrainBatch, weighted_step
from ol_ray.models import head_layer, load_model
from ol_ray.scoring import score_samples
from ol_ray.tokenization import tokenize_texts

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


def test_weighted_step_on_gpu_with_bf16(tiny_model_dir, sst2_rows):
    device = torch.device("cuda")
    model = load_model(ModelConfig(name_or_path=tiny_model_dir)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    input_ids, _ = tokenize_texts([r[0] for r in sst2_rows[:32]], tiny_model_dir, 64)
    batch = TrainBatch(input_ids, np.array([int(r[1]) for r in sst2_rows[:32]]), np.ones(32, dtype=np.float32))
    stats = weighted_step(model, optimizer, batch, 0, device, grad_clip=1.0, precision="bf16")
    assert np.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    assert next(model.parameters()).device.type == "cuda"
