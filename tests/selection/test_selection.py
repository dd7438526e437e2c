"""One contract, run over every registered strategy in every weighting mode; then each strategy's behaviour on
constructed pools. No Ray."""

import numpy as np
import pytest

from ol_ray.config import SelectionConfig
from ol_ray.selection.base import STRATEGIES, order_by
from ol_ray.selection.selector import capped, inclusion_probabilities, make_strategy, systematic_sample

MODES = ("hard", "soft", "importance")


def pool(size, seed=0, classes=2, dim=8):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes), size=size)
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    labels = rng.integers(0, classes, size)
    return {
        "sample_id": np.array([f"s{i}" for i in range(size)], dtype=object),
        "label": labels,
        "loss": -np.log(probs[np.arange(size), labels]).astype(np.float32),
        "entropy": -(probs * np.log(probs)).sum(axis=1).astype(np.float32),
        "margin": (top2[:, 0] - top2[:, 1]).astype(np.float32),
        "max_prob": top2[:, 0].astype(np.float32),
        "predicted": probs.argmax(axis=1),
        "probs": probs.astype(np.float32),
        "features": rng.normal(size=(size, dim)).astype(np.float32),
        "grad_norm": rng.random(size).astype(np.float32),
        "irreducible_loss": rng.random(size).astype(np.float32),
        "embedding": rng.normal(size=(size, dim)).astype(np.float32),
        "weight_version": np.zeros(size, dtype=np.int64),
    }


def config(name, **overrides):
    if name == "mix":
        overrides.setdefault("mix", {"margin": 0.7, "random": 0.3})
    return SelectionConfig(strategy=name, **overrides)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("pool_size, batch_size", [(32, 32), (64, 16), (10, 32), (1, 1)])
def test_strategy_contract(name, mode, pool_size, batch_size):
    candidates = pool(pool_size)
    selection = make_strategy(config(name, mode=mode)).select(candidates, batch_size, np.random.default_rng(1))
    assert len(selection.indices) == min(batch_size, pool_size)
    assert len(np.unique(selection.indices)) == len(selection.indices)
    assert selection.indices.min() >= 0 and selection.indices.max() < pool_size
    assert selection.weights.shape == selection.indices.shape
    assert np.all(np.isfinite(selection.weights)) and np.all(selection.weights >= 0)
    again = make_strategy(config(name, mode=mode)).select(candidates, batch_size, np.random.default_rng(1))
    assert np.array_equal(selection.indices, again.indices)  # seeded: reproducible
    assert np.array_equal(selection.weights, again.weights)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_nan_scores_and_ties_never_crash_and_rank_last(name, mode):
    candidates = pool(40, seed=3)
    broken = np.arange(0, 40, 4)  # every fourth candidate has NaN statistics
    for column in ("loss", "entropy", "margin", "max_prob", "grad_norm", "irreducible_loss"):
        candidates[column] = np.full(40, 0.5, dtype=np.float32)  # ties everywhere else
        candidates[column][broken] = np.nan
    for column in ("embedding", "probs", "features"):
        candidates[column][broken] = np.nan
    selection = make_strategy(config(name, mode=mode)).select(candidates, 20, np.random.default_rng(0))
    assert len(np.unique(selection.indices)) == 20 and np.all(np.isfinite(selection.weights))
    if mode != "importance" and name not in ("random", "mix"):
        assert not set(selection.indices) & set(broken)  # 30 usable candidates: the 10 broken ones rank last


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("broken_rows", [10, 40])
def test_more_picks_than_usable_candidates_stay_distinct(name, mode, broken_rows):
    candidates = pool(40, seed=6)
    broken = np.arange(broken_rows)
    for column in ("loss", "entropy", "margin", "max_prob", "grad_norm", "irreducible_loss", "embedding", "probs",
                   "features"):
        candidates[column][broken] = np.nan
    selection = make_strategy(config(name, mode=mode, mix={"diversity": 0.5, "loss": 0.5})).select(
        candidates, 36, np.random.default_rng(0))
    assert len(np.unique(selection.indices)) == 36 and np.all(np.isfinite(selection.weights))


def test_scores_become_weights_with_nan_below_every_valid_score():
    from ol_ray.selection.base import usefulness

    assert list(usefulness(np.array([-1.0, 2.0, np.nan, np.inf]))) == [0.0, 3.0, 0.0, 0.0]
    assert list(order_by(np.array([np.inf, 1.0, -np.inf, 2.0]), np.random.default_rng(0)))[:2] == [3, 1]


def test_importance_without_a_uniform_share_still_draws_b_distinct():
    scores = np.array([5.0, 3.0, 0.0, 0.0, 0.0, 0.0])  # fewer positive scores than the batch
    pi = inclusion_probabilities(scores, 4, alpha=2.0, epsilon=0.0)
    assert pi.sum() == pytest.approx(4.0) and np.all(np.isfinite(pi)) and pi.max() <= 1.0
    assert len(set(systematic_sample(pi, np.random.default_rng(0)).tolist())) == 4
    huge = inclusion_probabilities(np.array([1e30, 1.0, 2.0]), 2, alpha=50.0, epsilon=0.1)  # no overflow
    assert np.all(np.isfinite(huge)) and huge.sum() == pytest.approx(2.0)


def test_coverage_gains_centroids_when_the_first_pool_had_too_few_distinct_rows():
    from ol_ray.selection.diversity import CoverageSelection

    strategy = CoverageSelection(clusters=4)
    first = pool(8)
    first["embedding"] = np.tile(np.eye(8)[:1], (8, 1)).astype(np.float32)  # one direction only
    strategy.observe(first, strategy.rank(first, np.random.default_rng(0)).order[:2])
    assert len(strategy.centroids) == 1
    second = pool(16)
    second["embedding"] = np.eye(16, 8)[np.arange(16) % 8].astype(np.float32)
    strategy.rank(second, np.random.default_rng(0))
    assert len(strategy.centroids) == 4 and len(strategy.stream_counts) == 4 == len(strategy.selected_counts)


def test_stateful_strategies_round_trip_their_state():
    for name in ("diversity", "coverage", "mix"):
        first = make_strategy(config(name, mix={"diversity": 1, "coverage": 1} if name == "mix" else {}))
        first.select(pool(64, seed=1), 16, np.random.default_rng(0))
        second = make_strategy(config(name, mix={"diversity": 1, "coverage": 1} if name == "mix" else {}))
        second.load_state_dict(first.state_dict())
        a = first.select(pool(64, seed=2), 16, np.random.default_rng(5))
        b = second.select(pool(64, seed=2), 16, np.random.default_rng(5))
        assert np.array_equal(a.indices, b.indices), name


def test_random_is_uniform_and_unweighted():
    strategy = make_strategy(SelectionConfig(strategy="random"))
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for _ in range(2000):
        selection = strategy.select(pool(20), 5, rng)
        counts[selection.indices] += 1
        assert np.all(selection.weights == 1.0)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


@pytest.mark.parametrize("name, column, most_useful", [
    ("entropy", "entropy", "max"), ("least_confidence", "max_prob", "min"), ("margin", "margin", "min"),
    ("loss", "loss", "max"), ("gradient", "grad_norm", "max")])
def test_uncertainty_loss_and_gradient_pick_the_top_scores(name, column, most_useful):
    candidates = pool(50, seed=4, classes=4)
    selection = make_strategy(config(name)).select(candidates, 10, np.random.default_rng(0))
    values = candidates[column]
    expected = np.argsort(-values if most_useful == "max" else values)[:10]
    assert set(selection.indices) == set(expected)


def test_uncertainty_measures_differ_with_more_than_two_classes():
    candidates = pool(200, seed=7, classes=5)
    picks = {name: set(make_strategy(config(name)).select(candidates, 20, np.random.default_rng(0)).indices)
             for name in ("entropy", "least_confidence", "margin")}
    assert picks["entropy"] != picks["margin"] and picks["least_confidence"] != picks["margin"]
    two = pool(200, seed=7, classes=2)  # two classes: all three rank the same
    two_picks = [set(make_strategy(config(n)).select(two, 20, np.random.default_rng(0)).indices)
                 for n in ("entropy", "least_confidence", "margin")]
    assert two_picks[0] == two_picks[1] == two_picks[2]


def test_rho_loss_prefers_learnable_over_noisy_and_learnt():
    candidates = pool(3)
    candidates["loss"] = np.array([2.0, 2.0, 0.1], dtype=np.float32)  # learnable, noisy, learnt
    candidates["irreducible_loss"] = np.array([0.2, 2.1, 0.05], dtype=np.float32)
    selection = make_strategy(config("rho_loss")).select(candidates, 1, np.random.default_rng(0))
    assert list(selection.indices) == [0]


def test_diversity_never_picks_a_duplicate_while_a_distinct_one_exists():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(6, 8))
    embeddings = np.concatenate([np.repeat(distinct[:1], 20, axis=0), distinct[1:]])  # 20 copies + 5 distinct
    candidates = pool(25)
    candidates["embedding"] = embeddings.astype(np.float32)
    strategy = make_strategy(config("diversity"))
    selection = strategy.select(candidates, 6, rng)
    copies = [i for i in selection.indices if i < 20]
    assert len(copies) == 1 and set(range(20, 25)) <= set(selection.indices)
    # the memory remembers: a pool of near-copies of what was just selected, plus one new direction, picks the new
    again = pool(5)
    again["embedding"] = np.concatenate([distinct[1:5], rng.normal(size=(1, 8))]).astype(np.float32)
    assert list(strategy.select(again, 1, rng).indices) == [4]


def test_coverage_tracks_the_stream_histogram():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    strategy = make_strategy(config("coverage", clusters=4))
    shares = np.array([0.55, 0.25, 0.15, 0.05])
    picked = np.zeros(4)
    for _ in range(40):
        which = rng.choice(4, size=128, p=shares)
        candidates = pool(128, seed=int(rng.integers(1 << 30)))
        candidates["embedding"] = (centres[which] + rng.normal(size=(128, 4))).astype(np.float32)
        selection = strategy.select(candidates, 16, rng)
        picked += np.bincount(which[selection.indices], minlength=4)
    assert np.allclose(picked / picked.sum(), shares, atol=0.03)


def test_badge_starts_from_the_longest_gradient_and_never_repeats_a_gradient():
    candidates = pool(20, classes=2, dim=4)
    candidates["probs"][:] = [0.9, 0.1]
    candidates["probs"][7] = [0.5, 0.5]  # the most uncertain: the longest gradient embedding...
    candidates["features"][7] = candidates["features"][7] / np.linalg.norm(candidates["features"][7]) * 10
    candidates["probs"][:10] = candidates["probs"][0]  # ...and rows 0-9 (but 7) are ten copies of one sample
    candidates["features"][:7] = candidates["features"][8:10] = candidates["features"][0]
    selection = make_strategy(config("badge")).select(candidates, 12, np.random.default_rng(0))
    assert selection.indices[0] == 7
    copies = [i for i in selection.indices if i < 10 and i != 7]
    assert len(copies) == 1 and set(range(10, 20)) <= set(selection.indices)


def test_badge_selects_more_uncertain_samples_than_random():
    rng = np.random.default_rng(0)
    badge, uniform = make_strategy(config("badge")), make_strategy(config("random"))
    gaps = []
    for seed in range(30):
        candidates = pool(64, seed=seed, classes=3)
        gaps.append(candidates["entropy"][badge.select(candidates, 8, rng).indices].mean()
                    - candidates["entropy"][uniform.select(candidates, 8, rng).indices].mean())
    assert np.mean(gaps) > 0


def test_mix_takes_its_shares():
    candidates = pool(100, seed=2)
    strategy = make_strategy(config("mix", mix={"loss": 0.75, "random": 0.25}))
    selection = strategy.select(candidates, 20, np.random.default_rng(0))
    top_loss = set(np.argsort(-candidates["loss"])[:15])
    assert len(top_loss & set(selection.indices)) >= 15


def test_class_cap_holds_and_yields_only_when_impossible():
    candidates = pool(60, seed=5)
    candidates["label"] = np.array([0] * 45 + [1] * 15)
    candidates["loss"] = np.concatenate([np.full(45, 5.0), np.full(15, 1.0)]).astype(np.float32)
    selection = make_strategy(config("loss", max_class_share=0.6)).select(candidates, 20, np.random.default_rng(0))
    labels = candidates["label"][selection.indices]
    assert (labels == 0).sum() <= 12 and len(selection.indices) == 20
    one_class = np.zeros(10, dtype=np.int64)
    assert len(capped(np.arange(10), one_class, 6, 0.5)) == 6  # a pool of one label: the cap yields


def test_soft_weights_follow_the_score_with_mean_one():
    candidates = pool(40, seed=8)
    selection = make_strategy(config("entropy", mode="soft")).select(candidates, 10, np.random.default_rng(0))
    entropy = candidates["entropy"][selection.indices]
    assert selection.weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert np.allclose(selection.weights, entropy / entropy.mean(), rtol=1e-5)


def test_importance_weights_give_an_unbiased_estimate_of_the_pool_mean_loss():
    candidates = pool(50, seed=9)
    strategy = make_strategy(config("loss", mode="importance", alpha=1.0, epsilon=0.1))
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(4000):
        selection = strategy.select(candidates, 8, rng)
        estimates.append(float((selection.weights * candidates["loss"][selection.indices]).sum() / 8))
    true_mean = float(candidates["loss"].mean())
    error = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - true_mean) < 4 * error  # unbiased within sampling noise
    top8 = np.sort(candidates["loss"])[-8:].mean()
    assert top8 > true_mean + 10 * error  # while the hard top-8 mean is far off


def test_inclusion_probabilities_and_systematic_sampling():
    scores = np.array([100.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    pi = inclusion_probabilities(scores, 3, alpha=1.0, epsilon=0.1)
    assert pi.sum() == pytest.approx(3.0) and pi.max() <= 1.0 and pi[0] == 1.0 and pi.min() > 0
    rng = np.random.default_rng(0)
    counts = np.zeros(6)
    for _ in range(20000):
        chosen = systematic_sample(pi, rng)
        assert len(set(chosen.tolist())) == 3
        counts[chosen] += 1
    assert np.allclose(counts / 20000, pi, atol=0.015)


def test_order_by_puts_nan_last_and_breaks_ties_by_seed():
    scores = np.array([0.5, np.nan, 0.5, 0.9, 0.5])
    order = order_by(scores, np.random.default_rng(0))
    assert order[0] == 3 and order[-1] == 1
    assert {tuple(order_by(scores, np.random.default_rng(seed))[1:4]) for seed in range(20)} != {(0, 2, 4)}
