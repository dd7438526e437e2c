"""Weight publishing: versioned weights in the Ray object store, behind a small store actor.

The learner is busy training most of the time and an actor runs one method at a time, so scorers never ask the
learner for weights. The learner `ray.put`s its weights once per version and hands the reference to the
`WeightStore`, a small actor that answers scorers at once. Scorers check the newest version before each batch and
pull only when it is newer. The store also counts samples scored and taken by the learner (how far scoring ran ahead
is reported as `scoring_lead_max`), publishes, pulls and scorer starts, so a run can show that weights flowed and
that its scorers started once.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import TYPE_CHECKING, Any, Optional

import ray

if TYPE_CHECKING:  # the WeightStore actor's process never needs torch: importing it there is seconds of CPU
    from torch import nn


FIRST_WEIGHTS_TIMEOUT_S = 600.0  # a scorer waiting for the learner's first weights (it loads and evaluates first)
PUBLISH_TIMES_KEPT = 10_000  # the store remembers when this many of the newest versions were published


class WeightStore:
    """Holds the newest published weights (generation, version, object reference) and sample counts.

    `generation` changes when a restarted learner resets the store to the weights of its checkpoint: scorers then pull
    those, even though their version number is lower than what was published before the crash. Plain Python; run it
    as an actor with `ray.remote(num_cpus=0)(WeightStore)`.

    Fencing: every publish carries the learner's epoch (`learner_epoch`: one more at each learner start); a publish
    from an older epoch than the newest seen (a dead learner's late call) is refused. Restartable: with `state_path`
    the epoch, generation and counters are saved at every publish, so a restarted store fences as before and counts
    on; it holds no weights until the learner's next publish (scorers keep theirs meanwhile).
    """

    def __init__(self, state_path: Optional[str] = None):
        self.state_path = state_path
        self.epoch = 0  # the newest learner epoch that published
        self.generation = 0
        self.version = -1
        self.refs: list[Any] = []  # [ObjectRef], wrapped in a list so Ray passes the reference, not the weights
        self.publishes = 0
        self.refused = 0  # publishes from an older learner epoch
        self.restarts = 0  # times this store restarted and recovered its state
        self.scorer_starts = 0  # scorer processes that started (a restarted one counts again)
        self.pulls = 0
        self.samples_scored = 0
        self.samples_consumed = 0
        self.published_bytes = 0
        self.lead_max = 0  # most scored samples the learner had not yet taken: how far scoring ran ahead
        self.published_at: dict[int, float] = {}  # version -> wall-clock time of its publish (newest kept)
        if state_path and os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            for key in self.SAVED:  # only its own counters, whatever else the file holds
                setattr(self, key, saved.get(key, getattr(self, key)))
            self.restarts += 1
            self.generation += 1  # scorers must pull what comes next, whatever its version
            self._save()

    SAVED = ("epoch", "generation", "publishes", "refused", "restarts", "scorer_starts", "pulls", "samples_scored",
             "samples_consumed", "published_bytes", "lead_max")

    def _save(self) -> None:
        if not self.state_path:
            return
        with open(self.state_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({key: getattr(self, key) for key in self.SAVED}, handle)
        os.replace(self.state_path + ".tmp", self.state_path)

    def publish(self, version: int, refs: list[Any], nbytes: int, reset: bool = False, epoch: int = 0) -> bool:
        """A new version from the learner of `epoch`; with `reset`, replace whatever is held (a learner restored
        from a checkpoint). Returns whether it was taken (False: an older epoch's, or not newer)."""
        if epoch < self.epoch:
            self.refused += 1
            self._save()
            return False
        self.epoch = epoch
        if reset:
            self.generation += 1
        elif version <= self.version:
            return False
        self.version, self.refs = version, refs
        self.published_at[version] = time.time()
        if len(self.published_at) > PUBLISH_TIMES_KEPT:
            del self.published_at[next(iter(self.published_at))]
        self.publishes += 1
        self.published_bytes += nbytes
        self._save()
        return True

    def pull_if_newer(self, generation: int, version: int) -> Optional[tuple[int, int, list[Any]]]:
        """A scorer's poll before each chunk: (generation, version, refs) when they differ from the scorer's."""
        if self.version < 0 or (generation, version) == (self.generation, self.version):
            return None
        self.pulls += 1
        return self.generation, self.version, self.refs

    def publish_times(self) -> dict[int, float]:
        """When each kept version was published (wall-clock seconds): what serving freshness is measured from."""
        return dict(self.published_at)

    def scored(self, samples: int) -> None:
        self.samples_scored += samples
        self.lead_max = max(self.lead_max, self.samples_scored - self.samples_consumed)

    def consumed(self, samples: int) -> None:
        self.samples_consumed += samples

    def scorer_started(self, pid: int, node_id: str = "") -> None:
        self.scorer_starts += 1

    def stats(self) -> dict[str, int]:
        return {
            "weight_version_published": self.version,
            "weight_generation": self.generation,
            "weight_publishes": self.publishes,
            "weight_pulls": self.pulls,
            "weight_bytes_published": self.published_bytes,
            "weight_bytes_per_publish": self.published_bytes // self.publishes if self.publishes else 0,
            "samples_scored": self.samples_scored,
            "scoring_lead_max": self.lead_max,
            "scorer_starts": self.scorer_starts,
            "weight_publishes_refused": self.refused,
            "weight_store_restarts": self.restarts,
        }


class WeightClient:
    """A scorer's side of the store: before each batch, pull the newest weights if they differ from ours."""

    def __init__(self, store: Any, poll_s: float = 0.05):
        self.store = store
        self.poll_s = poll_s
        self.generation = -1
        self.version = -1

    def scored(self, samples: int) -> None:
        self.store.scored.remote(samples)

    def refresh(self, model: nn.Module, wait: bool = False, timeout_s: float = FIRST_WEIGHTS_TIMEOUT_S) -> None:
        """Load the store's weights into `model` if they differ from ours; with `wait`, block until some exist
        (at most `timeout_s`: a learner that never starts must not leave scorers waiting forever)."""
        deadline = time.monotonic() + timeout_s
        while True:
            newer = ray.get(self.store.pull_if_newer.remote(self.generation, self.version))
            if newer is not None:
                generation, version, refs = newer
                try:
                    state = ray.get(refs[0])
                except ray.exceptions.ObjectLostError:  # the learner that put them died: its restart republishes
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(self.poll_s)
                    continue
                with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict copies them
                    warnings.simplefilter("ignore", UserWarning)
                    from ol_ray.models.loading import load_numpy_state

                    load_numpy_state(model, state)
                self.generation, self.version = generation, version
            if wait and self.version < 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no weights were published within {timeout_s:g} s: has the learner started?")
                time.sleep(self.poll_s)
                continue
            return


def next_learner_epoch(run_dir: str) -> int:
    """One more than the last learner start's epoch in `run_dir` (1 for the first), saved before it is used, so
    every learner incarnation of a run, across restarts and resumes, has a larger epoch than the ones before."""
    path = os.path.join(run_dir, "learner_epoch")
    try:
        with open(path, encoding="utf-8") as handle:
            epoch = int(handle.read().strip() or 0) + 1
    except FileNotFoundError:
        epoch = 1
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(str(epoch))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)
    return epoch


class WeightPublisher:
    """The learner's side: publish every `every` updates while anyone scores (with `scoring` off, only the versions
    forced: the starting and the restored weights). Publishing on a fixed schedule, not on demand, is what bounds
    staleness (`ol_ray.driver.admission`)."""

    def __init__(self, store: Any, every: int, scoring: bool = True, epoch: int = 0):
        self.store = store
        self.every = every
        self.scoring = scoring
        self.epoch = epoch  # this learner's start number: the store refuses older ones' publishes
        self.version = -1

    def maybe_publish(self, model: nn.Module, version: int, force: bool = False, reset: bool = False) -> bool:
        """Publish `version` if due (`force`: now; `reset`: now, replacing newer versions after a restore)."""
        if not reset and version <= self.version:
            return False
        if not (force or reset) and (not self.scoring or version - self.version < self.every):
            return False
        from ol_ray.models.loading import state_to_numpy

        state = state_to_numpy(model, trainable_only=True)  # with LoRA: the adapters and the head only
        nbytes = sum(value[1].nbytes if isinstance(value, tuple) else value.nbytes for value in state.values())
        ref = ray.put(state)
        ray.get(self.store.publish.remote(version, [ref], nbytes, reset, self.epoch))
        self.version = version
        return True
