"""Quarantine: where rejected rows go, one JSON line each with the reason, so nothing is dropped silently.

Plain Python; the pipeline runs it as a small actor on the driver's node (ray.remote(num_cpus=0)(QuarantineSink)),
so validation tasks anywhere in the cluster can hand it their rejects.
"""

from __future__ import annotations

import json
from typing import Any


class QuarantineSink:
    """Appends quarantine records to a JSONL file and counts them, and their reasons."""

    def __init__(self, path: str):
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")
        self.count = 0
        self.reasons: dict[str, int] = {}

    def write(self, records: list[dict[str, Any]]) -> int:
        for record in records:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.reasons[record["code"]] = self.reasons.get(record["code"], 0) + 1
        self.handle.flush()
        self.count += len(records)
        return self.count

    def stats(self) -> dict[str, Any]:
        return {"samples_quarantined": self.count, "quarantine_reasons": dict(self.reasons)}

    def close(self) -> dict[str, Any]:
        self.handle.close()
        return self.stats()
