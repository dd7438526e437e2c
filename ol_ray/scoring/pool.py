"""The scorer pool: the run's scorer actors, started once and kept across windows, checkpoints and learner restarts.

One scoring execution for the whole run: the driver submits chunks of the stream as admission control allows
(`ol_ray.driver.admission`), each to the scorer with the fewest chunks in flight (at most `per_scorer` each, so a scorer
always has its next chunk queued and never idles between chunks). A scorer answers with two references: a small
`ChunkResult` the driver reads, and the block of candidates it hands on to the learner without fetching it.

Scorers are actors with unlimited restarts and task retries: one that dies is started again by Ray (its __init__
pulls the newest weights) and the chunk it held is retried; the quarantine sink drops the rejects a retried chunk
sends twice. With `scoring.max_scorers` above `num_scorers`, the pool grows by one scorer whenever every scorer has
been full for GROW_AFTER_S while admitted chunks wait.

Why not a Ray Data actor pool: a Ray Data execution ends with its input, so a pool per window restarted every scorer
every window (ray issue 46479); a streaming datasource would keep one execution, but Ray Data bundles a stage's input
up to its batch size (which GPU stages must set) before it calls an actor, so a chunk smaller than that batch would
wait for rows that admission control holds back until the learner has trained: a deadlock by design.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ol_ray.config.schema import Config
from ol_ray.tasks import task_for

GROW_AFTER_S = 2.0


def columns_needed(cfg: Config) -> tuple[str, ...]:
    """The statistics scorers compute: what the selection strategy and the batch policy read, plus the loss and
    prediction that give prequential accuracy from the scores; () when nothing reads a score (no model in the
    scorers: they validate and tokenize, and prequential figures come from the learner's own forward pass)."""
    from ol_ray.batching.policies import policy_needs
    from ol_ray.selection.selector import make_strategy

    needs = set(make_strategy(cfg.selection).needs) | set(policy_needs(cfg.batching))
    needs.discard("irreducible_loss")  # rho_loss: the irreducible-loss model's, computed beside the loss
    if not needs:
        return ()
    return tuple(sorted(needs | set(task_for(cfg.model.kind).prequential_columns)))


class ScorerPool:
    """Scorer actors made by `make_scorer()`, each with at most `per_scorer` chunks in flight."""

    def __init__(self, make_scorer: Callable[[], Any], size: int, max_size: int = 0, per_scorer: int = 2):
        self.make_scorer = make_scorer
        self.scorers = [make_scorer() for _ in range(size)]
        self.in_flight: list[list[Any]] = [[] for _ in range(size)]  # ChunkResult references per scorer
        self.max_size = max(max_size, size)
        self.per_scorer = per_scorer
        self.full_since: Optional[float] = None

    def __len__(self) -> int:
        return len(self.scorers)

    def _settle(self) -> None:
        import ray

        for refs in self.in_flight:
            if refs:
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in done:
                    refs.remove(ref)

    def has_room(self, backlog: bool = False, now: Optional[float] = None) -> bool:
        """Whether a scorer can take a chunk now; with `backlog` (chunks are waiting to be admitted), a pool that has
        been full for GROW_AFTER_S grows by one scorer up to max_size."""
        self._settle()
        if any(len(refs) < self.per_scorer for refs in self.in_flight):
            self.full_since = None
            return True
        now = time.monotonic() if now is None else now
        if not backlog or len(self.scorers) >= self.max_size:
            return False
        if self.full_since is None:
            self.full_since = now
        elif now - self.full_since >= GROW_AFTER_S:
            self.scorers.append(self.make_scorer())
            self.in_flight.append([])
            self.full_since = None
            return True
        return False

    def submit(self, chunk: Any) -> tuple[Any, Any]:
        """Send a chunk to the least busy scorer: (ChunkResult reference, block reference)."""
        index = min(range(len(self.scorers)), key=lambda i: len(self.in_flight[i]))
        result, block = self.scorers[index].process.remote(chunk)
        self.in_flight[index].append(result)
        return result, block

    def drain(self, timeout_s: float = 120.0) -> None:
        """Wait for every chunk in flight to finish (their results are dropped): after a learner restart, so that
        no late chunk writes quarantine records into windows about to be replayed."""
        import ray

        refs = [ref for refs in self.in_flight for ref in refs]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s, fetch_local=False)
        self._settle()

    def kill(self) -> None:
        import ray

        for scorer in self.scorers:
            ray.kill(scorer)
        self.scorers, self.in_flight = [], []
