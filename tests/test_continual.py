"""Continual-learning metrics on a hand-made accuracy matrix, and the Page-Hinkley drift detector on seeded streams."""

import numpy as np
import pytest

from ol_ray.continual import (PageHinkley, average_accuracy, backward_transfer, continual_metrics, forgetting,
                              forward_transfer)

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
