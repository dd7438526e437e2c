"""Admission control: how many more stream samples may enter scoring now, so that scores stay fresh.

Scores are only as good as the weights they came from. Rather than letting scorers run as far ahead as a window
(the first version's 28-68 updates of staleness), the driver admits samples for scoring only while the samples
admitted and not yet taken by an update (waiting for a scorer, being scored, on their way to the learner, or buffered
there) number fewer than (max_lead_updates + 1) pools, as AReaL's `max_head_offpolicyness` and verl's
`staleness_threshold` bound how far generation runs ahead of training.

The bound this gives, with a constant pool size P, scorers that pull the newest published weights before each chunk
and a learner that publishes every `publish_every` = k updates and takes its pools first in, first out:

    staleness = (updates before the one that trains a sample) - (weight version it was scored with)
             <= max_lead_updates + publish_every - 1

Why: when a sample is admitted, fewer than (L + 1) P samples (itself included) are outstanding, all ahead of it or
beside it; the driver's view of the learner may be late, which only overstates what is outstanding. So at most L
updates pass before the one that takes it (each takes P). Its scorer pulled weights no older than those published
when it was admitted, at most k - 1 updates behind the learner. `max_lead_updates: 0` with `publish_every: 1` is
lockstep: each pool is scored with the weights of the update just made (staleness 0). A policy that changes the
batch size changes P: the bound then holds in samples ((L + 1) pools of the size at admission), not exactly in
updates. Replayed samples are rescored by the learner itself (staleness 0).

Plain Python: the driver owns one, feeds it what it admits, delivers and hears back, and asks it how much more.
"""

from __future__ import annotations

from dataclasses import dataclass


def staleness_bound(max_lead_updates: int, publish_every: int) -> int:
    """The most updates a trained sample's score may be behind the update that trains it (see the module text)."""
    return max_lead_updates + publish_every - 1


@dataclass
class Admission:
    """Counts of samples between the stream and the learner's updates, and how many more may enter."""

    max_lead_updates: int
    pool_size: int  # samples the learner's next update reads: it says so in each reply
    undelivered: int = 0  # admitted, not yet handed to the learner (waiting for or at a scorer)
    in_flight: int = 0  # handed to the learner in calls it has not answered yet
    buffered: int = 0  # held by the learner after its latest answer

    @property
    def outstanding(self) -> int:
        return self.undelivered + self.in_flight + self.buffered

    @property
    def capacity(self) -> int:
        return (self.max_lead_updates + 1) * self.pool_size

    def allowance(self) -> int:
        """How many more samples may be admitted now."""
        return max(0, self.capacity - self.outstanding)

    def admitted(self, rows: int) -> None:
        self.undelivered += rows

    def delivered(self, rows: int, kept: int) -> None:
        """A chunk of `rows` admitted samples came back from scoring with `kept` of them (the rest quarantined) and
        went to the learner."""
        self.undelivered -= rows
        self.in_flight += kept

    def answered(self, kept: int, buffered: int, pool_size: int) -> None:
        """The learner answered a call that carried `kept` samples: it now buffers `buffered` and wants pools of
        `pool_size` (0: unchanged)."""
        self.in_flight -= kept
        self.buffered = buffered
        if pool_size > 0:
            self.pool_size = pool_size
