"""The ledger's memory of seen sample ids: exact for what it remembers, bounded, compact, and saved apart."""

import os
import subprocess
import sys

import numpy as np

from ol_ray.state.ledger import Ledger, SeenIds, id_hash


def test_an_id_hash_is_the_same_in_every_process():
    assert id_hash("train.tsv:17") != id_hash("train.tsv:18") and id_hash(17) == id_hash("17")
    code = "from ol_ray.state.ledger import id_hash; print(id_hash('train.tsv:17'))"
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


def test_closed_windows_fold_into_one_entry_so_the_ledger_stays_small():
    ledger = Ledger()
    for window in range(1000):
        ledger.record([window] * 3, "trained", [f"{window}:{i}" for i in range(3)])
        ledger.record([window], "not_selected")
        ledger.finish_window(window, read=5, quarantined=1)
    ledger.record([1000, 1000], "trained")  # the open window: samples in, not finished
    assert len(ledger.windows) == 1 and ledger.windows_closed == 1000
    totals = ledger.totals()
    assert (totals["read"], totals["trained"], totals["quarantined"], totals["unresolved"]) == (5000, 3002, 1000, -2)
    assert not ledger.balanced()
    ledger.finish_window(1000, read=2, quarantined=0)
    assert ledger.balanced() and ledger.windows == {} and ledger.totals()["read"] == 5002
    restored = Ledger.from_json(ledger.to_json())
    assert restored.totals() == ledger.totals() and restored.windows_closed == 1001
    old_format = {"windows": {"0": {"read": 2, "trained": 2, "finished": True}, "1": {"read": 0, "trained": 1}}}
    legacy = Ledger.from_json(old_format)  # a checkpoint from before folding: finished windows fold on load
    assert list(legacy.windows) == [1] and legacy.totals()["trained"] == 3
