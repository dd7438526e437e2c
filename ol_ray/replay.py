"""The replay buffer: a bounded memory of past samples that the learner mixes into later updates (rehearsal).

Plain Python, callable without Ray. Three policies decide what the buffer keeps:

- `reservoir` (default): a uniform sample of every sample the learner received (Vitter's algorithm R, 1985; as
  "reservoir" experience replay in Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019). Each
  of the n samples seen so far is in the buffer with probability capacity / n.
- `class_balanced`: class-balancing reservoir sampling (Chrysakis & Moens, "Online Continual Learning from
  Imbalanced Data", ICML 2020): a new sample of a class that is not the largest in the buffer replaces a random
  sample of the largest class; a sample of the largest class replaces one of its own class with probability
  (its class's count in the buffer) / (its class's count in the stream). Minority classes keep their samples.
- `selected`: a reservoir over the samples the selection strategy chose to train on, so the buffer holds what
  the strategy valued rather than the raw stream.

The buffer keeps token ids, label, target mask (causal LM) and sample id; what a strategy ranks by is recomputed
when a sample is replayed (the learner rescores it with its current weights).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

Columns = dict[str, np.ndarray]
KEPT = ("sample_id", "input_ids", "label", "target_mask", "irreducible_loss")  # per-sample columns kept


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
            item = {key: columns[key][row] for key in keys}
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
        largest = np.flatnonzero(counts == counts.max())
        if label not in largest:  # a smaller class takes a place of the largest one
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
        for key in self.slots[0]:
            values = [item[key] for item in items]
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
                "size": len(self.slots)}

    def load(self, state: dict[str, Any], columns: Optional[Columns]) -> None:
        """Restore counters, random state and the stored samples (from `state_dict()` and `columns()`)."""
        self.seen, self.class_seen = int(state["seen"]), [int(c) for c in state["class_seen"]]
        self.rng.bit_generator.state = state["rng"]
        columns = columns or {}
        size = len(columns.get("sample_id", []))
        if size != state["size"]:
            raise ValueError(f"the checkpoint's replay buffer holds {size} samples, its state says {state['size']}")
        self.slots = [{key: value[i] for key, value in columns.items()} for i in range(size)]
