"""The sample ledger: every sample read is accounted for, per window, across crashes.

Each window's samples end up in exactly one of: quarantined (bad row or duplicate id), not selected, trained, or
skipped because their update had a non-finite loss or gradient. The identity

    read = quarantined + not_selected + trained + nonfinite

holds for every finished window and for the totals. The ledger is part of every checkpoint, and checkpoints are taken
at window boundaries, so after a crash the stream replays from the checkpoint's cursor and each replayed sample is
counted once (exactly-once accounting); samples that had been trained before the crash and are trained again are
counted in `trained_twice` (at-least-once training), which is bounded by the samples since the last checkpoint.

Plain Python; the learner owns it. The ledger log (ledger.jsonl: which samples each update used) is kept
beside it by the functions at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from ol_ray.jsonl import cut_after, iter_jsonl

OUTCOMES = ("not_selected", "trained", "nonfinite")
LEDGER_LOG = "ledger.jsonl"  # which samples each update used, appended per update
ROLLED_BACK_LOG = "ledger.rolled_back.jsonl"  # ledger-log lines of updates a crash undid


@dataclass
class WindowEntry:
    read: int = 0  # rows the source produced for this window (known when the window is finished)
    quarantined: int = 0  # rejected rows, from the quarantine sink (known when the window is finished)
    not_selected: int = 0
    trained: int = 0
    nonfinite: int = 0
    finished: bool = False  # every row of the window has been handed to the learner

    def resolved(self) -> int:
        return self.quarantined + self.not_selected + self.trained + self.nonfinite


def id_hash(sample_id: str) -> int:
    """A sample id as a 64-bit hash, the same in every process (Python's own `hash` of a str is salted per process).
    Two of n different ids collide with probability about n^2 / 2^65: one in 3,700 over 10^8 ids."""
    return int.from_bytes(hashlib.blake2b(str(sample_id).encode("utf-8"), digest_size=8).digest(), "little")


class SeenIds:
    """The sample ids received so far, to catch repeats, in bounded memory: each id as its 64-bit hash (8 bytes, not a
    Python string of 60 or more), the newest `capacity` of them (0: all). New ids collect in a small set and merge
    into a sorted array, for lookups by binary search, once they are a 32nd of it."""

    def __init__(self, capacity: int = 0, hashes: Optional[np.ndarray] = None):
        self.capacity = capacity
        self.arrival = np.zeros(0, dtype=np.uint64)  # in the order received, oldest first
        self.lookup = np.zeros(0, dtype=np.uint64)  # the same, sorted
        self.recent: dict[int, None] = {}  # received since the last merge, in order
        if hashes is not None:
            self.arrival = np.asarray(hashes, dtype=np.uint64)
            self._merge()

    def __contains__(self, sample_id: str) -> bool:
        return self._remembered(id_hash(sample_id))

    def _remembered(self, key: int) -> bool:
        if key in self.recent:
            return True
        at = int(np.searchsorted(self.lookup, np.uint64(key)))
        return at < len(self.lookup) and int(self.lookup[at]) == key

    def add(self, sample_id: str) -> bool:
        """Remember `sample_id`; False when it was remembered already (a repeat), True when it is new."""
        key = id_hash(sample_id)
        if self._remembered(key):
            return False
        self.recent[key] = None
        if len(self.recent) >= max(4096, len(self.arrival) // 32):
            self._merge()
        return True

    def __len__(self) -> int:
        return len(self.arrival) + len(self.recent)

    def _merge(self) -> None:
        arrival = np.concatenate([self.arrival, np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))])
        self.arrival = arrival[-self.capacity:] if self.capacity else arrival
        self.lookup = np.sort(self.arrival)
        self.recent = {}

    def hashes(self) -> np.ndarray:
        """The remembered hashes, oldest first (what a checkpoint saves)."""
        self._merge()
        return self.arrival


@dataclass
class Ledger:
    """Per window: rows read, quarantined, not selected, trained, non-finite. A window that is finished and whose
    every row is resolved can change no more: it is folded into `closed`, so the ledger holds only the open windows
    (a few) however long the run, and its totals cost the same at the millionth update as at the first."""

    windows: dict[int, WindowEntry] = field(default_factory=dict)  # the open windows
    closed: WindowEntry = field(default_factory=lambda: WindowEntry(finished=True))  # the sum of the closed ones
    windows_closed: int = 0
    trained_twice: int = 0  # samples trained again after a resume replayed them
    replayed: set[str] = field(default_factory=set)  # ids trained after the checkpoint we resumed from
    seen: SeenIds = field(default_factory=SeenIds)  # ids received so far, to catch duplicates (saved apart: binary)

    def entry(self, window: int) -> WindowEntry:
        return self.windows.setdefault(int(window), WindowEntry())

    def record(self, windows: Iterable[int], outcome: str, sample_ids: Iterable[str] = ()) -> None:
        """Count one outcome for samples of the given windows (one window index per sample)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown ledger outcome {outcome!r}")
        touched = set()
        for window in windows:
            entry = self.entry(window)
            setattr(entry, outcome, getattr(entry, outcome) + 1)
            touched.add(int(window))
        if outcome == "trained" and self.replayed:
            again = self.replayed.intersection(sample_ids)
            self.trained_twice += len(again)
            self.replayed.difference_update(again)
        for window in touched:
            self._close_if_done(window)

    def finish_window(self, window: int, read: int, quarantined: int) -> None:
        entry = self.entry(window)
        entry.read, entry.quarantined, entry.finished = read, quarantined, True
        self._close_if_done(window)

    def _close_if_done(self, window: int) -> None:
        entry = self.windows.get(window)
        if entry is None or not entry.finished or entry.read != entry.resolved():
            return
        for name in ("read", "quarantined", "not_selected", "trained", "nonfinite"):
            setattr(self.closed, name, getattr(self.closed, name) + getattr(entry, name))
        self.windows_closed += 1
        del self.windows[window]

    def totals(self) -> dict[str, int]:
        """Sums over all windows, and how many samples are not resolved yet (buffered at the learner)."""
        entries = [self.closed, *self.windows.values()]
        sums = {name: sum(getattr(e, name) for e in entries)
                for name in ("read", "quarantined", "not_selected", "trained", "nonfinite")}
        sums["unresolved"] = sums["read"] - sum(e.resolved() for e in entries)
        sums["trained_twice"] = self.trained_twice
        return sums

    def balanced(self) -> bool:
        """At the end of a stream: every window finished and each of its samples accounted for exactly once."""
        return all(e.finished and e.read == e.resolved() for e in self.windows.values())

    def to_json(self) -> dict[str, Any]:
        """Everything but the seen ids, which `seen.hashes()` gives as an array for a binary file."""
        return {"windows": {str(k): asdict(v) for k, v in sorted(self.windows.items())},
                "closed": asdict(self.closed), "windows_closed": self.windows_closed,
                "trained_twice": self.trained_twice, "replayed": sorted(self.replayed)}

    @classmethod
    def from_json(cls, data: dict[str, Any], seen_hashes: Optional[np.ndarray] = None,
                  capacity: int = 0) -> "Ledger":
        """The ledger `to_json` gave, with the seen ids' hashes (older checkpoints kept the ids in `seen`, and
        every window open)."""
        if seen_hashes is None:
            seen_hashes = np.array([id_hash(i) for i in data.get("seen", [])], dtype=np.uint64)
        ledger = cls(windows={int(k): WindowEntry(**v) for k, v in data.get("windows", {}).items()},
                     closed=WindowEntry(**data.get("closed", {"finished": True})),
                     windows_closed=int(data.get("windows_closed", 0)),
                     trained_twice=int(data.get("trained_twice", 0)), seen=SeenIds(capacity, seen_hashes),
                     replayed=set(data.get("replayed", [])))
        for window in list(ledger.windows):
            ledger._close_if_done(window)
        return ledger


def append_ledger_log(run_dir: str, entry: dict[str, Any]) -> None:
    """Append which samples an update used to the run's ledger log (what a resume needs to count replays)."""
    with open(os.path.join(run_dir, LEDGER_LOG), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def rewind_ledger_log(run_dir: str, updates: int, ledger: Ledger) -> None:
    """A restore to `updates`: move ledger-log lines of later updates to ledger.rolled_back.jsonl (their samples are
    about to be replayed) and mark the ids they trained in `ledger.replayed`, so those trained again count as
    trained twice (also across repeated crashes)."""
    path = os.path.join(run_dir, LEDGER_LOG)
    rolled_back_path = os.path.join(run_dir, ROLLED_BACK_LOG)
    rolled_back = cut_after(path, lambda entry: entry["update"] <= updates)  # reads only the lines it cuts
    for entry in rolled_back + [e for e in iter_jsonl(rolled_back_path) if e["update"] > updates]:
        ledger.replayed.update(entry.get("trained", []))
    if rolled_back:
        with open(rolled_back_path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(entry) + "\n" for entry in rolled_back)
            handle.flush()
            os.fsync(handle.fileno())
