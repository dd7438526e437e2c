"""Quarantine: where rejected rows go, one JSON line each with a code and a reason, so nothing is dropped silently.

Plain Python; the pipeline runs it as a small actor on the driver's node (ray.remote(num_cpus=0)(QuarantineSink)),
so validation tasks anywhere in the cluster can hand it their rejects. It counts rejects per reason code, ignores a
record it already holds (a retried validation task sends its rejects again), and after a crash drops the records
of windows that will be replayed.

Its memory is bounded over a run of any length: the records live in the file, not in memory; what it holds is the
counts and the keys of the newest KEY_WINDOWS windows (a retry resends a chunk still in flight, and admission
control keeps those within the newest window or two). Opening an existing file and rewinding stream it once.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any, Callable

from ol_ray.jsonl import iter_jsonl

KEY_WINDOWS = 16  # windows whose record keys are kept for de-duplicating retries


class QuarantineSink:
    """Appends quarantine records to a JSONL file and counts them per reason code."""

    def __init__(self, path: str, monitor: Any = None, report_every_s: float = 1.0):
        self.path = path
        self.monitor, self.report_every_s, self.reported = monitor, report_every_s, 0.0  # its RSS, for bench memory
        self.total = 0
        self.reasons: collections.Counter = collections.Counter()
        self.keys: dict[int, set[tuple]] = {}  # window -> keys of its records, for the newest KEY_WINDOWS windows
        self.handle = None
        if os.path.exists(path):  # a resumed run: count the complete records, cut a line torn by a crash
            self._keep(lambda record: True)
        self.handle = open(path, "a", encoding="utf-8")

    @staticmethod
    def _key(record: dict[str, Any]) -> tuple:
        """A record's identity: sample, reason code, window, and for the learner's repeats of an id which repeat."""
        return record["sample_id"], record["code"], record["window"], record.get("repeat")

    def _count(self, record: dict[str, Any]) -> None:
        self.total += 1
        self.reasons[record["code"]] += 1
        window = record["window"]
        self.keys.setdefault(window, set()).add(self._key(record))
        if len(self.keys) > KEY_WINDOWS:
            for old in sorted(self.keys)[:-KEY_WINDOWS]:
                del self.keys[old]

    def _keep(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Rewrite the file with the records `keep` accepts (streamed: one record in memory at a time) and count
        them afresh; returns how many were dropped."""
        if self.handle is not None:
            self.handle.close()
        self.total, self.reasons, self.keys = 0, collections.Counter(), {}
        dropped = 0
        with open(self.path + ".tmp", "w", encoding="utf-8") as out:
            for record in iter_jsonl(self.path):
                if keep(record):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    self._count(record)
                else:
                    dropped += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(self.path + ".tmp", self.path)
        return dropped

    def write(self, records: list[dict[str, Any]]) -> int:
        """Append records, skipping ones already held (a retried call: same sample, reason code, window, repeat)."""
        for record in records:
            if self._key(record) in self.keys.get(record["window"], ()):
                continue
            self._count(record)
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
        if self.monitor is not None and time.monotonic() - self.reported >= self.report_every_s:
            import psutil

            self.reported = time.monotonic()
            self.monitor.report.remote("quarantine", {"rss_mb": psutil.Process().memory_info().rss / 2**20,
                                                      "records": self.total})
        return self.total

    def rewind(self, windows_done: int) -> int:
        """Forget the records of windows from `windows_done` on (they are about to be replayed); returns how many."""
        if max(self.keys, default=-1) < windows_done:  # the newest window written is always among the keys
            return 0  # nothing of those windows is held (the usual case: a fresh start, a crash between windows)
        dropped = self._keep(lambda record: record["window"] < windows_done)
        self.handle = open(self.path, "a", encoding="utf-8")
        return dropped

    def stats(self) -> dict[str, Any]:
        return {"samples_quarantined": self.total, "quarantine_reasons": dict(self.reasons)}

    def close(self) -> dict[str, Any]:
        self.handle.close()
        return self.stats()
