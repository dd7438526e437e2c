"""Batch-size policies as plain objects: one contract over every registered policy, then each policy's rule with
scripted monitor snapshots and loss, gradient-noise and uncertainty sequences (no Ray, no model)."""

import json

import numpy as np
import pytest

from ol_ray.batching.base import POLICIES, BatchContext
from ol_ray.batching.policies import (clamp_batch_size, fitting_batch, lr_scale, make_policy, noise_scale_estimates,
                                      pool_for)
from ol_ray.config import BatchingConfig, ConfigError, load_config

from conftest import ROOT

BOUNDS = dict(batch_size=32, min_batch_size=8, max_batch_size=64)
SNAPSHOTS = [
    {},
    {"learner_step_s": 0.5, "learner_samples_per_s": 64.0, "queue_depth": 3, "learner_rss_mb": 900.0,
     "available_mb": 2000.0, "memory_per_sample_mb": 30.0},
    {"learner_gpu_free_mb": 10.0, "learner_gpu_total_mb": 80_000.0, "learner_gpu_allocated_mb": 70_000.0,
     "memory_per_sample_mb": 900.0, "memory_ceiling": 12},
]


def config(policy: str, **overrides) -> BatchingConfig:
    extra = {"policies": ("adaptive", "resource", "uncertainty")} if policy == "min_of" else {}
    return BatchingConfig(policy=policy, **{**BOUNDS, **extra, **overrides})


def noise_stats(loss: float, small_sq: float, big_sq: float, batch_size: int) -> dict:
    return {"sample_loss_mean": loss, "noise_small_sq": small_sq, "noise_small_size": batch_size // 2,
            "noise_big_sq": big_sq, "batch_size": batch_size}


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_policy_contract(name, snapshot):
    """Every policy answers a non-negative int, its clamped answer holds the bounds, and its state survives JSON."""
    cfg = config(name)
    policy = make_policy(cfg)
    rng = np.random.default_rng(0)
    for updates in range(30):
        context = BatchContext(pool_size=int(rng.integers(0, 200)), updates=updates, snapshot=snapshot,
                               uncertainty=float(rng.random()), seconds_since_update=float(rng.random() * 20))
        requested = policy.batch_size(context)
        assert isinstance(requested, int) and requested >= 0
        if requested:
            assert 8 <= clamp_batch_size(requested, cfg, 64) <= 64
        if hasattr(policy, "observe"):
            policy.observe(noise_stats(float(rng.random()), float(rng.random() * 10), float(rng.random()), 32))
    if hasattr(policy, "state_dict"):
        restored = make_policy(cfg)
        restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
        assert restored.state_dict() == policy.state_dict()


def test_fixed_is_constant():
    policy = make_policy(BatchingConfig(policy="fixed", batch_size=24))
    assert {policy.batch_size(BatchContext(pool_size=100, updates=u)) for u in range(10)} == {24}


def test_clamp_respects_bounds_and_pool():
    cfg = BatchingConfig(batch_size=32, min_batch_size=8, max_batch_size=64)
    assert clamp_batch_size(1000, cfg, 500) == 64
    assert clamp_batch_size(2, cfg, 500) == 8
    assert clamp_batch_size(32, cfg, 5) == 5


def test_pool_keeps_the_selection_ratio_at_every_batch_size():
    cfg = BatchingConfig(batch_size=16)
    assert [pool_for(b, cfg, 32) for b in (8, 16, 40)] == [16, 32, 80]
    assert pool_for(10, cfg, 16) == 10 and pool_for(10, cfg, 8) == 10  # never fewer candidates than B


def test_noise_scale_estimates_are_unbiased():
    """Gaussian per-sample gradients with known G and Sigma: averaged estimates from means over B/2 and B match."""
    rng = np.random.default_rng(1)
    mean, sd, dim = np.full(10, 0.1), 1.0, 10  # |G|^2 = 0.1, tr(Sigma) = 10, B_simple = 100
    estimates = []
    for _ in range(4000):
        samples = rng.normal(mean, sd, size=(32, dim))
        small, big = samples[:16].mean(axis=0), samples.mean(axis=0)
        estimates.append(noise_scale_estimates(float(small @ small), 16, float(big @ big), 32))
    gradient_sq, trace = np.mean(estimates, axis=0)
    assert gradient_sq == pytest.approx(0.1, abs=0.02) and trace == pytest.approx(10.0, rel=0.05)
    with pytest.raises(ValueError):
        noise_scale_estimates(1.0, 16, 1.0, 16)


def test_adaptive_grows_toward_the_noise_scale_within_bounds_and_cooldown():
    cfg = config("adaptive", cooldown_updates=5, hysteresis=0.25, step_factor=2.0)
    policy = make_policy(cfg)
    sizes = []
    for _ in range(60):  # |G|^2 = 0.01, tr(Sigma) = 10: B_simple = 1000, far above max
        b = policy.batch_size(BatchContext(pool_size=0, updates=0))
        small, big = 0.01 + 10 / (b // 2), 0.01 + 10 / b  # the expected squared norms at B/2 and B
        policy.observe(noise_stats(0.5, small, big, b))
        sizes.append(policy.batch_size(BatchContext(pool_size=0, updates=0)))
    assert sizes[-1] == 64 and policy.noise_scale() == pytest.approx(1000, rel=0.01)
    changes = [i for i in range(1, 60) if sizes[i] != sizes[i - 1]]
    assert changes and all(b - a >= 5 for a, b in zip(changes, changes[1:]))  # never closer than the cooldown
    assert all(sizes[i] <= 2 * sizes[i - 1] for i in range(1, 60))  # at most step_factor per change


def test_adaptive_grows_to_the_bound_when_the_gradient_is_lost_in_noise():
    policy = make_policy(config("adaptive", cooldown_updates=2))
    for _ in range(12):  # |G_B|^2 exactly what pure noise gives (|G|^2 estimate below 0): converged, in effect
        b = policy.batch_size(BatchContext(pool_size=0, updates=0))
        policy.observe(noise_stats(0.5, 10 / (b // 2), 10 / b - 0.01, b))
    assert policy.noise_scale() == float("inf") and policy.batch_size(BatchContext(pool_size=0, updates=0)) == 64


def test_adaptive_hysteresis_stops_flapping():
    policy = make_policy(config("adaptive", cooldown_updates=1, hysteresis=0.25))
    for step in range(100):  # a noise scale wobbling +-15% around the current 32
        scale = 32 * (1.15 if step % 2 else 0.85)
        policy.observe(noise_stats(0.5, 1 + scale / 16, 1 + scale / 32, 32))
        assert policy.batch_size(BatchContext(pool_size=0, updates=step)) == 32


def test_adaptive_shrinks_when_the_loss_rises():
    policy = make_policy(config("adaptive", cooldown_updates=3, loss_rise=0.1))
    for step in range(20):  # a steady loss and a noise scale equal to B: no reason to move
        policy.observe(noise_stats(0.5, 1 + 32 / 16, 1 + 32 / 32, 32))
    assert policy.batch_size(BatchContext(pool_size=0, updates=20)) == 32
    sizes = []
    for step in range(4):  # the loss jumps: halve B at once, and again after the cooldown if it stays up
        policy.observe(noise_stats(2.0, 1 + 32 / 16, 1 + 32 / 32, 32))
        sizes.append(policy.batch_size(BatchContext(pool_size=0, updates=21 + step)))
    assert sizes == [16, 16, 16, 8]


def test_uncertainty_grows_with_the_pool_uncertainty():
    policy = make_policy(config("uncertainty"))
    sizes = [policy.batch_size(BatchContext(pool_size=100, updates=0, uncertainty=u)) for u in (0.0, 0.25, 1.0, 3)]
    assert sizes == [8, 22, 64, 64]


def test_resource_follows_free_memory_and_the_out_of_memory_ceiling():
    policy = make_policy(config("resource", headroom=0.1, max_batch_size=256))
    gpu = {"learner_gpu_free_mb": 9000.0, "learner_gpu_reserved_mb": 2000.0, "learner_gpu_allocated_mb": 1000.0,
           "learner_gpu_total_mb": 20000.0, "memory_per_sample_mb": 50.0}
    ask = lambda snapshot: policy.batch_size(BatchContext(pool_size=0, updates=0, snapshot=snapshot))  # noqa: E731
    assert ask({}) == 32  # nothing measured yet: the configured batch size
    assert ask(gpu) == (9000 + 2000 - 1000 - 2000) // 50 == 160
    assert ask({**gpu, "learner_gpu_free_mb": 4000.0}) == 60  # memory falls: B shrinks
    assert ask({**gpu, "memory_ceiling": 24}) == 24  # an out-of-memory error capped it
    cpu = {"learner_rss_mb": 1000.0, "available_mb": 3000.0, "memory_per_sample_mb": 10.0}
    assert ask(cpu) == (0.9 * 4000 - 1000) // 10
    budget = make_policy(config("resource", headroom=0.0, memory_budget_mb=1500.0))
    assert budget.batch_size(BatchContext(pool_size=0, updates=0, snapshot=cpu)) == 50
    assert fitting_batch(cpu, 0.0, 0.1, 0.0) is None


def test_periodic_fires_on_time_with_bounds():
    policy = make_policy(config("periodic", period_s=5.0))
    ask = lambda buffered, seconds: policy.batch_size(  # noqa: E731
        BatchContext(pool_size=buffered, updates=0, seconds_since_update=seconds, pool_ratio=2.0))
    assert ask(40, 4.9) == 0  # not yet
    assert ask(40, 5.0) == 20  # on time: whatever has accumulated (40 candidates at 2 per sample)
    assert ask(10, 30.0) == 0  # too few for min_batch_size: keep waiting
    assert ask(16, 30.0) == 8
    assert ask(1000, 0.1) == 64  # a burst: a full-size update now, the rest in the next ones


def test_min_of_takes_the_smallest_and_waits_with_periodic():
    cfg = config("min_of", policies=("uncertainty", "fixed"))
    policy = make_policy(cfg)
    assert policy.batch_size(BatchContext(pool_size=0, updates=0, uncertainty=1.0)) == 32
    assert policy.batch_size(BatchContext(pool_size=0, updates=0, uncertainty=0.0)) == 8
    waiting = make_policy(config("min_of", policies=("periodic", "fixed"), period_s=5.0))
    assert waiting.batch_size(BatchContext(pool_size=40, updates=0, seconds_since_update=1.0)) == 0
    assert waiting.batch_size(BatchContext(pool_size=40, updates=0, seconds_since_update=6.0)) == 32
    assert make_policy(config("min_of", policies=("adaptive", "resource"))).wants_gradient_noise


def test_lr_scaling_rules():
    assert lr_scale(64, 16, "none") == 1.0
    assert lr_scale(64, 16, "linear") == 4.0
    assert lr_scale(64, 16, "sqrt") == 2.0


@pytest.mark.parametrize("override, message", [
    ("batching.policy=min_of", "batching.policies must name at least two"),
    ("batching.policies=[adaptive, nope]", "'nope' is not a policy"),
    ("batching.lr_scaling=cubic", "batching.lr_scaling must be one of"),
    ("batching.step_factor=1", "batching.step_factor must be above 1"),
    ("batching.headroom=1", "batching.headroom must be in"),
    ("batching.period_s=0", "batching.period_s must be positive"),
])
def test_bad_batching_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["stream.path=x", override])


def test_every_policy_is_documented():
    import os

    page = open(os.path.join(ROOT, "docs", "batching.md"), encoding="utf-8").read()
    for name in POLICIES:
        assert f"`{name}`" in page
