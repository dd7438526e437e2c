import json

from ol_ray.quarantine import QuarantineSink


def record(sample_id, code="empty_text", window=0):
    return {"sample_id": sample_id, "code": code, "reason": code.replace("_", " "), "window": window, "raw": ""}


def test_sink_appends_counts_and_ignores_a_retry(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    sink = QuarantineSink(str(path))
    sink.write([record("a:1")])
    sink.write([record("a:1"), record("a:2"), record("a:3", "bad_label", 1)])  # a retried task resends a:1
    sink.write([record("x", "duplicate_id", 1), record("x", "duplicate_id", 1)], dedupe=False)
    assert sink.window_count(0) == 2 and sink.window_count(1) == 3
    assert sink.close() == {"samples_quarantined": 5,
                            "quarantine_reasons": {"empty_text": 2, "bad_label": 1, "duplicate_id": 2}}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["sample_id"] for line in lines] == ["a:1", "a:2", "a:3", "x", "x"]


def test_rewind_forgets_replayed_windows_and_survives_a_restart(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    sink = QuarantineSink(str(path))
    sink.write([record("a:1", window=0), record("a:2", window=1), record("a:3", window=2)])
    assert sink.rewind(1) == 2
    sink.write([record("a:2", window=1)])
    sink.close()
    reopened = QuarantineSink(str(path))  # a new run directory owner picks the file up
    assert [r["sample_id"] for r in reopened.records] == ["a:1", "a:2"]
    assert reopened.stats()["samples_quarantined"] == 2
    reopened.close()


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    path.write_text(json.dumps(record("a:1")) + "\n" + '{"sample_id": "a:2", "co')
    sink = QuarantineSink(str(path))
    sink.write([record("a:3")])
    sink.close()
    assert [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] == ["a:1", "a:3"]
