"""Continual-learning metrics on a hand-made accuracy matrix, and the Page-Hinkley drift detector on seeded streams."""

import numpy as np
import pytest

from ol_ray.continual.metrics import (PageHinkley, Prequential, average_accuracy, backward_transfer, continual_metrics,
                                      forgetting, forward_transfer, task_matrix)

# rows: the end of phases 0, 1, 2; columns: evaluation sets 0, 1, 2 (set j is phase j's domain)
MATRIX = [[0.9, 0.2, 0.1],
          [0.7, 0.8, 0.3],
          [0.6, 0.7, 0.85]]
BASELINE = [0.5, 0.1, 0.2]


def test_metrics_of_a_hand_made_accuracy_matrix():
    assert average_accuracy(MATRIX) == pytest.approx((0.6 + 0.7 + 0.85) / 3)
    assert backward_transfer(MATRIX) == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)
    assert forward_transfer(MATRIX, BASELINE) == pytest.approx(((0.2 - 0.1) + (0.3 - 0.2)) / 2)
    assert forgetting(MATRIX) == pytest.approx([0.9 - 0.6, 0.8 - 0.7])
    metrics = continual_metrics(MATRIX, BASELINE)
    assert metrics["forgetting_mean"] == pytest.approx(0.2) and metrics["backward_transfer"] < 0


def test_one_phase_has_no_transfer_and_bad_shapes_are_named():
    assert backward_transfer([[0.8]]) is None and forward_transfer([[0.8]], [0.5]) is None
    assert continual_metrics([[0.8]], [0.5])["forgetting_mean"] is None
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.8, 0.7]])
    with pytest.raises(ValueError, match="one accuracy per evaluation set"):
        forward_transfer(MATRIX, [0.5])


def test_page_hinkley_fires_on_a_shift_and_not_on_a_stationary_stream():
    rng = np.random.default_rng(0)
    detector = PageHinkley(delta=0.005, threshold=50.0)
    stationary = rng.normal(0.7, 0.1, 5000)
    assert not any(detector.update(x) for x in stationary)
    shifted = rng.normal(1.2, 0.1, 500)
    fired = [t for t, x in enumerate(shifted) if detector.update(x)]
    assert fired and fired[0] < 200  # about threshold / shift = 100 samples after the change


def test_page_hinkley_state_survives_a_round_trip():
    rng = np.random.default_rng(1)
    first, second = PageHinkley(), PageHinkley()
    for x in rng.normal(0.5, 0.1, 100):
        first.update(x)
    second.load_state_dict(first.state_dict())
    tail = rng.normal(1.5, 0.1, 200)
    assert [first.update(x) for x in tail] == [second.update(x) for x in tail]


def test_page_hinkley_defaults_hold_on_heavy_tailed_losses():
    # per-sample cross-entropy is heavy-tailed: a long stationary stream must not fire, a doubled loss must
    rng = np.random.default_rng(2)
    detector = PageHinkley()
    assert not any(detector.update(x) for x in rng.exponential(0.3, 20_000))
    fired = [t for t, x in enumerate(rng.exponential(0.7, 2000)) if detector.update(x)]
    assert fired and fired[0] < 500


def test_prequential_accuracy_is_cumulative_balanced_and_fading():
    stream = Prequential(classes=2, fading=0.9)
    stream.update(np.array([1, 1, 1, 0]), np.array([0.1, 0.1, 0.1, 2.0]), np.array([0, 0, 0, 1]))
    metrics = stream.metrics()
    assert metrics["prequential_accuracy"] == 0.75 and metrics["prequential_balanced_accuracy"] == 0.5
    assert metrics["prequential_loss"] == pytest.approx(0.575)
    for _ in range(100):  # then only errors: the recent figure follows, the cumulative one lags
        stream.update(np.array([0]), np.array([1.0]), np.array([0]))
    assert stream.metrics()["prequential_accuracy_recent"] < 0.01 < stream.metrics()["prequential_accuracy"]
    copy = Prequential(classes=2, fading=0.9)
    copy.load_state_dict(stream.state_dict())
    assert copy.metrics() == stream.metrics()
    assert Prequential().metrics()["prequential_accuracy"] is None


def test_task_matrix_reads_the_evaluations_at_phase_ends():
    history = [{"accuracy": {"a": 0.5, "b": 0.4}}, {"accuracy": {"a": 0.9, "b": 0.6}},
               {"accuracy": {"a": 0.85, "b": 0.62}}, {"accuracy": {"a": 0.7, "b": 0.9}}]
    assert task_matrix(history, [1, 3], ["a", "b"]) == [[0.9, 0.6], [0.7, 0.9]]
    assert task_matrix(history, [1], ["a", "b"]) is None  # the second phase has not ended
    assert task_matrix(history, [1, 3], ["a", "c"]) is None  # no set named like the second phase
