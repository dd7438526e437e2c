"""One contract, run over every registered policy."""

import pytest

from ol_ray.batching import POLICIES, BatchContext, clamp_batch_size, make_policy
from ol_ray.config import BatchingConfig

SNAPSHOTS = [{}, {"learner_step_s": 0.5, "learner_samples_per_s": 64.0, "queue_depth": 3, "gpus": []}]


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_policy_contract(name, snapshot):
    cfg = BatchingConfig(policy=name, batch_size=32, min_batch_size=8, max_batch_size=64)
    policy = make_policy(cfg)
    for updates in range(20):
        requested = policy.batch_size(BatchContext(pool_size=48, updates=updates, snapshot=snapshot))
        assert isinstance(requested, int) and requested >= 1
        assert 8 <= clamp_batch_size(requested, cfg, 48) <= 48


def test_fixed_is_constant():
    policy = make_policy(BatchingConfig(policy="fixed", batch_size=24))
    assert {policy.batch_size(BatchContext(pool_size=100, updates=u)) for u in range(10)} == {24}


def test_clamp_respects_bounds_and_pool():
    cfg = BatchingConfig(batch_size=32, min_batch_size=8, max_batch_size=64)
    assert clamp_batch_size(1000, cfg, 500) == 64
    assert clamp_batch_size(2, cfg, 500) == 8
    assert clamp_batch_size(32, cfg, 5) == 5
