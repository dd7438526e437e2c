"""One contract, run over every registered strategy."""

import numpy as np
import pytest

from ol_ray.config import SelectionConfig
from ol_ray.selection import STRATEGIES, make_strategy


def pool(size, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1, 1], size=size).astype(np.float32)
    return {
        "sample_id": np.array([f"s{i}" for i in range(size)], dtype=object),
        "label": rng.integers(0, 2, size),
        "loss": -np.log(probs[:, 0]),
        "entropy": -(probs * np.log(probs)).sum(axis=1),
        "margin": np.abs(probs[:, 0] - probs[:, 1]),
        "max_prob": probs.max(axis=1),
        "predicted": probs.argmax(axis=1),
        "grad_norm": rng.random(size).astype(np.float32),
        "embedding": rng.normal(size=(size, 8)).astype(np.float32),
        "weight_version": np.zeros(size, dtype=np.int64),
    }


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("pool_size, batch_size", [(32, 32), (64, 16), (10, 32), (1, 1)])
def test_strategy_contract(name, pool_size, batch_size):
    strategy = make_strategy(SelectionConfig(strategy=name))
    candidates = pool(pool_size)
    selection = strategy.select(candidates, batch_size, np.random.default_rng(1))
    assert len(selection.indices) == min(batch_size, pool_size)
    assert len(np.unique(selection.indices)) == len(selection.indices)
    assert selection.indices.min() >= 0 and selection.indices.max() < pool_size
    assert selection.weights.shape == selection.indices.shape
    assert np.all(np.isfinite(selection.weights)) and np.all(selection.weights > 0)
    again = make_strategy(SelectionConfig(strategy=name)).select(candidates, batch_size, np.random.default_rng(1))
    assert np.array_equal(selection.indices, again.indices)  # seeded: reproducible


def test_random_is_uniform_and_unweighted():
    strategy = make_strategy(SelectionConfig(strategy="random"))
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for _ in range(2000):
        selection = strategy.select(pool(20), 5, rng)
        counts[selection.indices] += 1
        assert np.all(selection.weights == 1.0)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
