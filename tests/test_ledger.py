"""The ledger's memory of seen sample ids: exact for what it remembers, bounded, compact, and saved apart."""

import os
import subprocess
import sys

import numpy as np

from ol_ray.ledger import Ledger, SeenIds, id_hash


def test_an_id_hash_is_the_same_in_every_process():
    assert id_hash("train.tsv:17") != id_hash("train.tsv:18") and id_hash(17) == id_hash("17")
    code = "from ol_ray.ledger import id_hash; print(id_hash('train.tsv:17'))"
    for salt in ("1", "2"):  # Python's own str hash would differ between these two processes
        other = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": salt},
                               capture_output=True, text=True, check=True)
        assert int(other.stdout) == id_hash("train.tsv:17") < 2**64


def test_seen_ids_remember_every_id_across_merges():
    seen = SeenIds()
    for i in range(10_000):  # several merges of the recent ids into the sorted array
        assert f"id-{i}" not in seen
        seen.add(f"id-{i}")
    assert len(seen) == 10_000 and all(f"id-{i}" in seen for i in range(0, 10_000, 7))
    assert "id-10000" not in seen and seen.hashes().dtype == np.uint64


def test_the_window_keeps_the_newest_ids_only():
    seen = SeenIds(capacity=5000)
    for i in range(12_000):
        seen.add(f"id-{i}")
    hashes = seen.hashes()
    assert len(hashes) == 5000 and hashes[-1] == np.uint64(id_hash("id-11999"))
    assert "id-11999" in seen and "id-7000" in seen and "id-6999" not in seen and "id-0" not in seen


def test_the_ledger_round_trips_with_its_hashes_and_reads_the_old_format():
    ledger = Ledger(seen=SeenIds(capacity=100))
    ledger.record([0, 0], "trained", ["a", "b"])
    for sample_id in ("a", "b"):
        ledger.seen.add(sample_id)
    data = ledger.to_json()
    assert "seen" not in data  # the ids go to a binary file, not into state.json
    back = Ledger.from_json(data, ledger.seen.hashes(), capacity=100)
    assert "a" in back.seen and "c" not in back.seen and back.totals()["trained"] == 2
    old = Ledger.from_json({**data, "seen": ["x", "y"]})  # a checkpoint from before the hashes
    assert "x" in old.seen and "a" not in old.seen
