"""Quarantine: where rejected rows go, one JSON line each with a code and a reason, so nothing is dropped silently.

Plain Python; the pipeline runs it as a small actor on the driver's node (ray.remote(num_cpus=0)(QuarantineSink)),
so validation tasks anywhere in the cluster can hand it their rejects. It counts rejects per window for the ledger,
ignores a record it already holds (a retried validation task sends its rejects again), and after a crash drops the
records of windows that will be replayed.
"""

from __future__ import annotations

import json
import os
from typing import Any


class QuarantineSink:
    """Appends quarantine records to a JSONL file and counts them per window and per reason code."""

    def __init__(self, path: str):
        self.path = path
        self.records: list[dict[str, Any]] = []
        if os.path.exists(path):  # a resumed run: keep the complete records, drop a line cut short by a crash
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
            self._rewrite(self.records)
        self.keys = {self._key(r) for r in self.records}
        self.handle = open(path, "a", encoding="utf-8")

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        with open(self.path + ".tmp", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        os.replace(self.path + ".tmp", self.path)

    @staticmethod
    def _key(record: dict[str, Any]) -> tuple:
        return record["sample_id"], record["code"], record["window"]

    def write(self, records: list[dict[str, Any]], dedupe: bool = True) -> int:
        """Append records; with `dedupe`, skip ones already held (same sample, reason code and window)."""
        for record in records:
            key = self._key(record)
            if dedupe and key in self.keys:
                continue
            self.keys.add(key)
            self.records.append(record)
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
        return len(self.records)

    def window_count(self, window: int) -> int:
        """Rejected samples of one window."""
        return sum(1 for r in self.records if r["window"] == window)

    def rewind(self, windows_done: int) -> int:
        """Forget the records of windows from `windows_done` on (they are about to be replayed); returns how many."""
        kept = [r for r in self.records if r["window"] < windows_done]
        dropped = len(self.records) - len(kept)
        if dropped:
            self.handle.close()
            self._rewrite(kept)
            self.records, self.keys = kept, {self._key(r) for r in kept}
            self.handle = open(self.path, "a", encoding="utf-8")
        return dropped

    def stats(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for record in self.records:
            reasons[record["code"]] = reasons.get(record["code"], 0) + 1
        return {"samples_quarantined": len(self.records), "quarantine_reasons": reasons}

    def close(self) -> dict[str, Any]:
        self.handle.close()
        return self.stats()
