import json

from ol_ray.data.quarantine import QuarantineSink


def record(sample_id, code="empty_text", window=0):
    return {"sample_id": sample_id, "code": code, "reason": code.replace("_", " "), "window": window, "raw": ""}


def test_sink_appends_counts_and_ignores_a_retry(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    sink = QuarantineSink(str(path))
    sink.write([record("a:1")])
    sink.write([record("a:1"), record("a:2"), record("a:3", "bad_label", 1)])  # a retried task resends a:1
    repeats = [{**record("x", "duplicate_id", 1), "repeat": n} for n in (0, 1)]
    sink.write(repeats)
    sink.write(repeats[1:])  # the learner's call retried after the sink restarted
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
    assert reopened.stats()["samples_quarantined"] == 2
    assert [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] == ["a:1", "a:2"]
    reopened.close()


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    path.write_text(json.dumps(record("a:1")) + "\n" + '{"sample_id": "a:2", "co')
    sink = QuarantineSink(str(path))
    sink.write([record("a:3")])
    sink.close()
    assert [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] == ["a:1", "a:3"]


def test_memory_holds_counts_and_recent_keys_only(tmp_path):
    """A long run: records stay in the file; the sink keeps the counts and the keys of its newest windows."""
    from ol_ray.data.quarantine import KEY_WINDOWS

    sink = QuarantineSink(str(tmp_path / "quarantine.jsonl"))
    for window in range(200):
        sink.write([record(f"w{window}:{i}", window=window) for i in range(5)])
    assert sink.stats()["samples_quarantined"] == 1000 and len(sink.keys) == KEY_WINDOWS
    assert not hasattr(sink, "records")
    sink.write([record("w199:0", window=199)])  # a retry of a recent window is still recognised
    assert sink.rewind(150) == 250 and sink.stats()["samples_quarantined"] == 750
    assert sink.rewind(150) == 0
    sink.close()
