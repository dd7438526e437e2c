"""JSON-lines files: a torn last line is left out (and cut), any other bad line is an error naming the file."""

import json

import pytest

from ol_ray import jsonl
from ol_ray.jsonl import JsonlError, cut_after, read_jsonl


def write(path, records, torn=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def test_a_torn_last_line_is_left_out_and_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    write(path, [{"update": 1}, {"update": 2}], torn='{"update": 3, "trai')
    assert read_jsonl(str(path)) == [{"update": 1}, {"update": 2}]
    assert read_jsonl(str(tmp_path / "none.jsonl")) == []
    path.write_text('{"update": 1}\n{"upd\n{"update": 3}\n')
    with pytest.raises(JsonlError, match=r"log.jsonl: line 2 is not JSON"):
        read_jsonl(str(path))


@pytest.mark.parametrize("block", [4, 1 << 16])  # lines longer than a block are read across blocks
def test_cut_after_reads_back_from_the_end_and_cuts_at_a_line(tmp_path, monkeypatch, block):
    monkeypatch.setattr(jsonl, "BLOCK", block)
    path = tmp_path / "ledger.jsonl"
    records = [{"update": u, "trained": [f"id{u}-{i}" for i in range(u)]} for u in range(1, 8)]
    write(path, records, torn='{"update": 8, "tra')
    assert cut_after(str(path), lambda r: r["update"] <= 4) == records[4:]
    assert read_jsonl(str(path)) == records[:4] and path.read_text().endswith("}\n")
    assert cut_after(str(path), lambda r: r["update"] <= 9) == [] and read_jsonl(str(path)) == records[:4]
    assert cut_after(str(path), lambda r: False) == records[:4] and path.read_text() == ""
    assert cut_after(str(tmp_path / "none.jsonl"), lambda r: True) == []
