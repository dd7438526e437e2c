import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.tokenization import length_groups, pad_batch, tokenize_batch, tokenize_texts


def test_tokenize_truncates_and_flags(tiny_model_dir):
    ids, truncated = tokenize_texts(["a good film", "film " * 100], tiny_model_dir, max_length=16)
    assert len(ids) == 2 and ids[0].dtype == np.int32
    assert len(ids[1]) == 16 and list(truncated) == [False, True]
    assert len(ids[0]) < 16


def test_tokenize_batch_replaces_text(tiny_model_dir):
    batch = {"sample_id": np.array(["a", "b"], dtype=object), "text": np.array(["good", "bad"], dtype=object),
             "label": np.array([1, 0])}
    out = tokenize_batch(batch, ModelConfig(name_or_path=tiny_model_dir, max_length=16))
    assert "text" not in out and out["input_ids"].shape == (2,) and out["tokens_truncated"].dtype == bool


def test_pad_batch_masks_padding():
    out = pad_batch([np.array([5, 6, 7]), np.array([8])], pad_id=0, device=torch.device("cpu"))
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("budget", [0, 8, 32, 100])
def test_length_groups_cover_every_sample_once_within_budget(budget):
    lengths = list(np.random.default_rng(0).integers(1, 30, size=40))
    groups = length_groups(lengths, budget)
    positions = np.concatenate(groups)
    assert sorted(positions.tolist()) == list(range(40))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert budget == 0 or len(group) * longest <= budget or len(group) == 1


def test_length_groups_reduce_padding():
    lengths = [3] * 30 + [40] * 2
    padded = lambda groups: sum(len(g) * max(lengths[i] for i in g) for g in groups)  # noqa: E731
    assert padded(length_groups(lengths, 128)) < padded(length_groups(lengths, 0)) / 3
