"""Admission control as plain arithmetic: how much may enter scoring, and the staleness bound it gives."""

import numpy as np

from ol_ray.driver.admission import Admission, staleness_bound


def test_admission_fills_lead_plus_one_pools_and_no_more():
    admission = Admission(max_lead_updates=2, pool_size=32)
    assert admission.capacity == 96 and admission.allowance() == 96
    admission.admitted(64)
    admission.admitted(32)
    assert admission.allowance() == 0
    admission.delivered(rows=64, kept=60)  # 4 quarantined by the scorer: they leave at once
    assert admission.outstanding == 92 and admission.allowance() == 4
    admission.answered(kept=60, buffered=28, pool_size=32)  # one update took 32 of the 60
    assert admission.outstanding == 32 + 28 and admission.allowance() == 36


def test_lockstep_admits_one_pool_at_a_time_and_follows_the_learners_pool_size():
    admission = Admission(max_lead_updates=0, pool_size=24)
    admission.admitted(24)
    assert admission.allowance() == 0
    admission.delivered(24, 24)
    admission.answered(24, buffered=0, pool_size=48)  # the policy doubled B: the next pool is larger
    assert admission.allowance() == 48
    admission.answered(0, buffered=0, pool_size=0)  # 0: no new word on the pool size
    assert admission.pool_size == 48


def simulate(lead, publish_every, pool, updates, rng):
    """Admission, scoring and learning as a queue: returns the staleness of every trained sample."""
    admission = Admission(lead, pool)
    stream_version, published = 0, 0  # learner updates so far, newest published version
    queue = []  # admitted samples' score versions, first in first out
    stale = []
    for _ in range(updates * 4):
        while admission.allowance() > 0:  # admit and score (with the newest published weights)
            size = min(int(rng.integers(1, pool + 1)), admission.allowance())
            admission.admitted(size)
            admission.delivered(size, size)
            queue.extend([published] * size)
        admission.answered(admission.in_flight, len(queue), pool)
        if len(queue) >= pool:  # an update takes the oldest pool
            stale.extend(stream_version - version for version in queue[:pool])
            del queue[:pool]
            stream_version += 1
            if stream_version % publish_every == 0:
                published = stream_version
            admission.answered(0, len(queue), pool)
    return np.array(stale)


def test_staleness_never_exceeds_the_bound():
    rng = np.random.default_rng(0)
    for lead in (0, 1, 2, 4):
        for publish_every in (1, 2, 3):
            stale = simulate(lead, publish_every, pool=16, updates=200, rng=rng)
            assert stale.max() <= staleness_bound(lead, publish_every)
    assert simulate(0, 1, pool=16, updates=50, rng=rng).max() == 0  # lockstep: every pool scored by the newest
