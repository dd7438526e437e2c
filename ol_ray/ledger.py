"""The sample ledger: every sample read is accounted for, per window, across crashes.

Each window's samples end up in exactly one of: quarantined (bad row or duplicate id), not selected, trained, or
skipped because their update had a non-finite loss or gradient. The identity

    read = quarantined + not_selected + trained + nonfinite

holds for every finished window and for the totals. The ledger is part of every checkpoint, and checkpoints are taken
at window boundaries, so after a crash the stream replays from the checkpoint's cursor and each replayed sample is
counted once (exactly-once accounting); samples that had been trained before the crash and are trained again are
counted in `trained_twice` (at-least-once training), which is bounded by the samples since the last checkpoint.

Plain Python; the learner owns it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

OUTCOMES = ("not_selected", "trained", "nonfinite")


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


@dataclass
class Ledger:
    windows: dict[int, WindowEntry] = field(default_factory=dict)
    trained_twice: int = 0  # samples trained again after a resume replayed them
    replayed: set[str] = field(default_factory=set)  # ids trained after the checkpoint we resumed from
    seen: set[str] = field(default_factory=set)  # ids received so far, to catch duplicates

    def entry(self, window: int) -> WindowEntry:
        return self.windows.setdefault(int(window), WindowEntry())

    def record(self, windows: Iterable[int], outcome: str, sample_ids: Iterable[str] = ()) -> None:
        """Count one outcome for samples of the given windows (one window index per sample)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown ledger outcome {outcome!r}")
        for window in windows:
            entry = self.entry(window)
            setattr(entry, outcome, getattr(entry, outcome) + 1)
        if outcome == "trained" and self.replayed:
            again = self.replayed.intersection(sample_ids)
            self.trained_twice += len(again)
            self.replayed.difference_update(again)

    def finish_window(self, window: int, read: int, quarantined: int) -> None:
        entry = self.entry(window)
        entry.read, entry.quarantined, entry.finished = read, quarantined, True

    def totals(self) -> dict[str, int]:
        """Sums over all windows, and how many samples are not resolved yet (buffered at the learner)."""
        sums = {name: sum(getattr(e, name) for e in self.windows.values())
                for name in ("read", "quarantined", "not_selected", "trained", "nonfinite")}
        sums["unresolved"] = sums["read"] - sum(e.resolved() for e in self.windows.values())
        sums["trained_twice"] = self.trained_twice
        return sums

    def balanced(self) -> bool:
        """At the end of a stream: every window finished and each of its samples accounted for exactly once."""
        return all(e.finished and e.read == e.resolved() for e in self.windows.values())

    def to_json(self) -> dict[str, Any]:
        return {"windows": {str(k): asdict(v) for k, v in sorted(self.windows.items())},
                "trained_twice": self.trained_twice, "seen": sorted(self.seen), "replayed": sorted(self.replayed)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Ledger":
        return cls(windows={int(k): WindowEntry(**v) for k, v in data.get("windows", {}).items()},
                   trained_twice=int(data.get("trained_twice", 0)), seen=set(data.get("seen", [])),
                   replayed=set(data.get("replayed", [])))
