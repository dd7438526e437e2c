"""The replay buffer: a bounded memory of past samples that the learner mixes into later updates (rehearsal).

Plain Python, callable without Ray. Three policies decide what the buffer keeps:

- `reservoir` (default): a uniform sample of every sample the learner received (Vitter's algorithm R, 1985; as
  "reservoir" experience replay in Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019). Each
  of the n samples seen so far is in the buffer with probability capacity / n.
- `class_balanced`: class-balancing reservoir sampling (Chrysakis & Moens, "Online Continual Learning from
  Imbalanced Data", ICML 2020). Once the buffer is full, a class is "full" from the first time it is (or ties)
  the largest in the buffer on. A new sample of a class that is not full replaces a random sample of a largest
  class; a sample of a full class replaces one of its own class with probability (its class's count in the buffer)
  / (its class's count in the stream). Minority classes keep their samples; balanced classes sample uniformly.
- `selected`: a reservoir over the samples the selection strategy chose to train on, so the buffer holds what
  the strategy valued rather than the raw stream.

The buffer keeps token ids, label, target mask (causal LM) and sample id; what a strategy ranks by is recomputed
when a sample is replayed (the learner rescores it with its current weights).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from ol_ray.data.validation import COLUMN_DEFAULTS

Columns = dict[str, np.ndarray]
KEPT = ("sample_id", "input_ids", "label", "target_mask", "irreducible_loss", "rating")  # per-sample columns kept


def object_array(values: list[Any]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


class ReplayBuffer:
    """At most `capacity` samples, kept by `policy` (reservoir, class_balanced or selected)."""

    def __init__(self, capacity: int, policy: str = "reservoir", classes: int = 0, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"a replay buffer needs a capacity of at least 1; got {capacity}")
        if policy == "class_balanced" and classes < 1:
            raise ValueError("class_balanced replay needs the number of classes")
        self.capacity, self.policy, self.classes = capacity, policy, classes
        self.rng = np.random.default_rng(seed)
        self.slots: list[dict[str, Any]] = []
        self.seen = 0  # samples offered to the buffer
        self.class_seen = [0] * classes  # per class, for class_balanced
        self.full: set[int] = set()  # class_balanced: classes that have been the largest since the buffer filled

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def feeds_on(self) -> str:
        """What the learner offers the buffer: every sample of a pool ("received"), or only those selected."""
        return "selected" if self.policy == "selected" else "received"

    def add(self, columns: Mapping[str, np.ndarray]) -> int:
        """Offer samples (columns of equal length); returns how many were stored."""
        keys = [key for key in KEPT if key in columns]
        stored = 0
        for row in range(len(columns["sample_id"])):
            # copies: a view would keep the whole batch it came from (scores, embeddings) alive in the buffer
            item = {key: np.array(columns[key][row], copy=True) if isinstance(columns[key][row], np.ndarray)
                    else columns[key][row] for key in keys}
            stored += self._offer(item)
        return stored

    def _offer(self, item: dict[str, Any]) -> bool:
        self.seen += 1
        if self.policy == "class_balanced":
            return self._offer_balanced(item)
        if len(self.slots) < self.capacity:
            self.slots.append(item)
            return True
        slot = int(self.rng.integers(0, self.seen))  # keep with probability capacity / seen
        if slot < self.capacity:
            self.slots[slot] = item
            return True
        return False

    def _offer_balanced(self, item: dict[str, Any]) -> bool:
        label = int(item["label"])
        self.class_seen[label] += 1
        if len(self.slots) < self.capacity:
            self.slots.append(item)
            return True
        counts = np.bincount([int(slot["label"]) for slot in self.slots], minlength=self.classes)
        largest = set(np.flatnonzero(counts == counts.max()).tolist())
        self.full |= largest
        if label not in self.full:  # a class that never was the largest takes a place of a largest one
            victims = [i for i, slot in enumerate(self.slots) if int(slot["label"]) in largest]
        else:  # the largest class samples itself like a reservoir
            if self.rng.random() >= counts[label] / self.class_seen[label]:
                return False
            victims = [i for i, slot in enumerate(self.slots) if int(slot["label"]) == label]
        self.slots[victims[int(self.rng.integers(0, len(victims)))]] = item
        return True

    def sample(self, count: int) -> np.ndarray:
        """Indices of `count` stored samples drawn uniformly without replacement (fewer if it holds fewer)."""
        count = min(count, len(self.slots))
        return np.sort(self.rng.choice(len(self.slots), size=count, replace=False)) if count else np.zeros(0, int)

    def take(self, indices: np.ndarray) -> Columns:
        """The stored samples at `indices` as columns (token ids and masks as object arrays)."""
        if not self.slots:
            return {}
        items = [self.slots[int(i)] for i in indices]
        columns: Columns = {}
        for key in self.slots[0] if not items else dict.fromkeys(key for item in items for key in item):
            if not all(key in item for item in items) and key not in COLUMN_DEFAULTS:
                continue  # a column samples from an older checkpoint lack, with no default
            values = [item.get(key, COLUMN_DEFAULTS.get(key)) for item in items]
            columns[key] = object_array(values) if key in ("input_ids", "target_mask", "sample_id") \
                else np.asarray(values)
        return columns

    def labels(self) -> np.ndarray:
        return np.asarray([int(slot["label"]) for slot in self.slots], dtype=np.int64)

    # --- checkpoints -------------------------------------------------------------------------------------------
    def columns(self) -> Columns:
        """Everything stored, as columns (for a checkpoint)."""
        return self.take(np.arange(len(self.slots)))

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "class_seen": list(self.class_seen), "rng": self.rng.bit_generator.state,
                "size": len(self.slots), "full": sorted(self.full)}

    def load(self, state: dict[str, Any], columns: Optional[Columns]) -> None:
        """Restore counters, random state and the stored samples (from `state_dict()` and `columns()`); a buffer
        larger than this one's capacity (a resume with a smaller replay_size) keeps a uniform subset."""
        self.seen, self.class_seen = int(state["seen"]), [int(c) for c in state["class_seen"]]
        self.full = set(state.get("full", []))
        self.rng.bit_generator.state = state["rng"]
        columns = columns or {}
        size = len(columns.get("sample_id", []))
        if size != state["size"]:
            raise ValueError(f"the checkpoint's replay buffer holds {size} samples, its state says {state['size']}")
        self.slots = [{key: value[i] for key, value in columns.items()} for i in range(size)]
        if size > self.capacity:
            self.slots = [self.slots[int(i)] for i in np.sort(self.rng.choice(size, self.capacity, replace=False))]
