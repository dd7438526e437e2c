"""Causal-LM math on tiny GPT-2 and Llama models built offline: token losses, scorer statistics, perplexity."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import pad_batch, pad_masks, tokenize_lm
from ol_ray.learner.update import make_optimizer, weighted_step
from ol_ray.models.loading import load_model, output_layer
from ol_ray.tasks.causal_lm import evaluate_lm, sample_token_losses, score_lm_samples
from ol_ray.tasks.losses import TrainBatch

CPU = torch.device("cpu")
PROMPTS = ["the cat sat on", "birds sing in", "", "a dog ran"]
RESPONSES = ["the mat .", "the morning .", "we read a good book . the sun is warm today .", "in the park ."]


@pytest.fixture(params=["gpt2", "llama"])
def lm(request, tiny_gpt2_dir, tiny_llama_dir):
    folder = tiny_gpt2_dir if request.param == "gpt2" else tiny_llama_dir
    cfg = ModelConfig(name_or_path=folder, kind="causal_lm", max_length=64)
    model = load_model(cfg).eval()
    ids, _, masks, _ = tokenize_lm(RESPONSES, PROMPTS, [""] * len(PROMPTS), folder, 64)
    pad_id = 0 if request.param == "llama" else 3  # GPT-2 pads with EOS
    return cfg, model, ids, masks, pad_id


def hf_loss(model, ids, mask):
    """transformers' own loss for one sample: labels = ids with the non-target tokens set to -100."""
    labels = torch.as_tensor(np.where(mask.astype(bool), ids, -100), dtype=torch.long)[None]
    with torch.no_grad():
        return float(model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None], labels=labels).loss)


def test_losses_are_transformers_losses_on_the_response_tokens_only(lm):
    cfg, model, ids, masks, pad_id = lm
    batch = pad_batch(ids, pad_id, CPU)
    with torch.no_grad():
        logits = model(**batch).logits
    losses, counts = sample_token_losses(logits, batch["input_ids"], batch["attention_mask"], pad_masks(masks, CPU))
    responses = tokenize_lm(RESPONSES, [""] * 4, [""] * 4, cfg.name_or_path, 64)[0]
    with_bos = cfg.name_or_path.endswith("llama") or "llama" in cfg.name_or_path
    for row in range(4):
        if PROMPTS[row]:  # response tokens, plus the EOS that ends it
            expected = len(responses[row]) - (1 if with_bos else 0) + 1
        else:  # a text: every token after the first
            expected = len(ids[row]) - 1
        assert int(counts[row]) == expected
        assert float(losses[row]) == pytest.approx(hf_loss(model, ids[row], masks[row]), rel=1e-5)


def test_scores_are_finite_and_consistent(lm):
    cfg, model, ids, masks, pad_id = lm
    stats = score_lm_samples(model, output_layer(model, cfg), ids, masks, pad_id, CPU)
    for name, values in stats.items():
        assert np.isfinite(values).all(), name
    assert np.allclose(stats["perplexity"], np.exp(stats["loss"]), rtol=1e-5)
    assert (stats["max_prob"] <= 1).all() and (stats["margin"] >= 0).all()
    assert (stats["entropy"] <= math.log(model.config.vocab_size) + 1e-4).all()
    assert np.allclose(stats["probs"].sum(axis=1), 1.0)
    assert stats["embedding"].shape == (4, model.config.hidden_size)
    assert stats["target_tokens"].tolist() == [int(m[1:].sum()) for m in masks]
    for row in range(4):
        assert float(stats["loss"][row]) == pytest.approx(hf_loss(model, ids[row], masks[row]), rel=1e-4)
    in_micro_batches = score_lm_samples(model, output_layer(model, cfg), ids, masks, pad_id, CPU,
                                        micro_batch_tokens=24)
    assert np.allclose(in_micro_batches["loss"], stats["loss"], atol=1e-5)


def test_grad_norm_is_the_output_layers_exact_gradient_norm(lm):
    cfg, model, ids, masks, pad_id = lm
    head = output_layer(model, cfg)
    stats = score_lm_samples(model, head, ids, masks, pad_id, CPU)
    for row in range(4):
        captured = {}
        hook = head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0]))
        with torch.no_grad():
            model(input_ids=torch.as_tensor(ids[row], dtype=torch.long)[None])
        hook.remove()
        weight = head.weight.detach().clone().requires_grad_(True)  # the head alone, not the tied embedding
        logits = F.linear(captured["h"][0, :-1], weight, head.bias)
        targets = torch.as_tensor(ids[row][1:], dtype=torch.long)
        chosen = torch.as_tensor(masks[row][1:].astype(bool))
        F.cross_entropy(logits[chosen], targets[chosen]).backward()
        assert float(stats["grad_norm"][row]) == pytest.approx(float(weight.grad.norm()), rel=1e-3)


def test_held_out_perplexity_pools_the_tokens(lm):
    cfg, model, ids, masks, pad_id = lm
    result = evaluate_lm(model, ids, masks, pad_id, CPU, batch_size=3)
    counts = [int(m[1:].sum()) for m in masks]
    pooled = sum(hf_loss(model, i, m) * c for i, m, c in zip(ids, masks, counts)) / sum(counts)
    assert result["tokens"] == sum(counts)
    assert result["loss"] == pytest.approx(pooled, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(pooled), rel=1e-5)
    assert 0 <= result["token_accuracy"] <= 1


def test_weighted_steps_on_target_tokens_lower_their_loss(lm):
    cfg, model, ids, masks, pad_id = lm
    model.train()
    optimizer = make_optimizer(model, 1e-2, 0.0, CPU)
    batch = TrainBatch(ids, np.zeros(4, np.int64), np.ones(4, np.float32), masks)
    first = weighted_step(model, optimizer, batch, pad_id, CPU, grad_clip=1.0, micro_batch_tokens=40)
    for _ in range(10):
        last = weighted_step(model, optimizer, batch, pad_id, CPU, grad_clip=1.0, micro_batch_tokens=40)
    assert first["micro_batches"] > 1 and not last["skipped"]
    assert last["sample_loss_mean"] < 0.8 * first["sample_loss_mean"]


def test_badge_on_causal_lm_scores_starts_with_the_least_sure_sample():
    from ol_ray.config import SelectionConfig
    from ol_ray.selection.selector import make_strategy
    from ol_ray.tasks.causal_lm import badge_probs

    max_prob = np.array([0.9, 0.2, 0.6, 0.4], dtype=np.float32)  # below and above 1/2
    pool = {"sample_id": np.arange(4), "label": np.zeros(4, np.int64),
            "probs": badge_probs(torch.from_numpy(max_prob)).numpy(),
            "features": np.ones((4, 3), dtype=np.float32)}
    selection = make_strategy(SelectionConfig(strategy="badge")).select(pool, 1, np.random.default_rng(0))
    assert selection.indices.tolist() == [1]


def test_grad_norm_counts_an_output_bias(tiny_gpt2_dir):
    cfg = ModelConfig(name_or_path=tiny_gpt2_dir, kind="causal_lm")
    model = load_model(cfg).eval()
    torch.manual_seed(1)
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=True)  # untied, with a bias
    ids, _, masks, _ = tokenize_lm(RESPONSES[:2], PROMPTS[:2], ["", ""], tiny_gpt2_dir, 64)
    stats = score_lm_samples(model, output_layer(model, cfg), ids, masks, 3, CPU)
    for row in range(2):
        model.zero_grad()
        labels = torch.as_tensor(np.where(masks[row].astype(bool), ids[row], -100), dtype=torch.long)[None]
        model(input_ids=torch.as_tensor(ids[row], dtype=torch.long)[None], labels=labels).loss.backward()
        expected = torch.sqrt(model.lm_head.weight.grad.pow(2).sum() + model.lm_head.bias.grad.pow(2).sum())
        assert float(stats["grad_norm"][row]) == pytest.approx(float(expected), rel=1e-3)
