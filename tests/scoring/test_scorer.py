import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import pad_batch, tokenize_texts
from ol_ray.models.loading import head_layer, load_model
from ol_ray.tasks.classification import exact_grad_norms, score_samples

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scored(tiny_model_dir, sst2_rows):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir, seed=3))
    model.eval()
    texts = [row[0] for row in sst2_rows[:24]]
    labels = np.array([int(row[1]) for row in sst2_rows[:24]])
    input_ids, _ = tokenize_texts(texts, tiny_model_dir, 64)
    stats = score_samples(model, head_layer(model, 2), input_ids, labels, 0, CPU)
    return model, input_ids, labels, stats


def test_statistics_match_the_softmax(scored):
    model, input_ids, labels, stats = scored
    with torch.no_grad():
        probs = F.softmax(model(**pad_batch(input_ids, 0, CPU)).logits, dim=-1).numpy()
    assert np.allclose(stats["max_prob"], probs.max(axis=1), atol=1e-5)
    assert np.allclose(stats["margin"], np.abs(probs[:, 0] - probs[:, 1]), atol=1e-5)
    assert np.allclose(stats["entropy"], -(probs * np.log(probs)).sum(axis=1), atol=1e-5)
    assert np.allclose(stats["loss"], -np.log(probs[np.arange(len(labels)), labels]), atol=1e-5)
    assert np.array_equal(stats["predicted"], probs.argmax(axis=1))
    assert stats["embedding"].shape == (len(labels), model.config.hidden_size)
    assert np.allclose(stats["probs"], probs, atol=1e-5)
    assert stats["features"].shape == (len(labels), head_layer(model, 2).in_features)


def test_exact_grad_norms_match_per_sample_autograd(scored):
    model, input_ids, labels, _ = scored
    norms = exact_grad_norms(model, input_ids[:6], labels[:6], 0, CPU, chunk_size=4)  # padded: lengths differ
    assert len({len(ids) for ids in input_ids[:6]}) > 1
    for i in range(6):
        model.zero_grad()
        logits = model(**pad_batch([input_ids[i]], 0, CPU)).logits
        F.cross_entropy(logits, torch.tensor([labels[i]])).backward()
        exact = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None)).item()
        assert norms[i] == pytest.approx(exact, rel=1e-3)
    model.zero_grad()


def test_grad_norm_is_the_exact_head_gradient_norm(scored):
    model, input_ids, labels, stats = scored
    head = head_layer(model, 2)
    for i in range(4):
        model.zero_grad()
        logits = model(**pad_batch([input_ids[i]], 0, CPU)).logits
        F.cross_entropy(logits, torch.tensor([labels[i]])).backward()
        exact = torch.sqrt(head.weight.grad.pow(2).sum() + head.bias.grad.pow(2).sum()).item()
        assert stats["grad_norm"][i] == pytest.approx(exact, rel=1e-4)


def test_micro_batches_give_the_same_statistics(scored):
    model, input_ids, labels, stats = scored
    grouped = score_samples(model, head_layer(model, 2), input_ids, labels, 0, CPU, micro_batch_tokens=40)
    for name in stats:
        assert np.allclose(grouped[name], stats[name], atol=1e-5), name


def test_empty_batch(scored):
    model = scored[0]
    out = score_samples(model, head_layer(model, 2), [], np.zeros(0, dtype=np.int64), 0, CPU)
    assert out["loss"].shape == (0,) and out["embedding"].shape == (0, model.config.hidden_size)


def test_only_the_statistics_asked_for_are_computed_and_they_are_the_same(scored):
    model, input_ids, labels, stats = scored
    calls = []
    hook = model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    try:
        some = score_samples(model, head_layer(model, 2), input_ids, labels, 0, CPU, columns=("entropy", "loss"))
    finally:
        hook.remove()
    assert set(some) == {"entropy", "loss"}
    assert np.allclose(some["entropy"], stats["entropy"], atol=1e-6) and np.allclose(some["loss"], stats["loss"])
    assert not any(call.get("output_hidden_states") for call in calls)  # no hidden states without an embedding
    assert set(score_samples(model, head_layer(model, 2), input_ids, labels, 0, CPU, columns=())) == set()


def test_bf16_scoring_runs_on_the_cpu_close_to_fp32(scored):
    model, input_ids, labels, stats = scored
    half = score_samples(model, head_layer(model, 2), input_ids, labels, 0, CPU, "bf16", columns=("entropy", "loss"))
    assert np.allclose(half["entropy"], stats["entropy"], atol=0.05) and np.allclose(half["loss"], stats["loss"],
                                                                                     atol=0.05)
    assert half["entropy"].dtype == np.float32
