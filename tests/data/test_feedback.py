"""Feedback: items checked with the stream's validation, acknowledged only once durable, and the source that follows
the log (a pipeline following it over HTTP, every acknowledged item trained or accounted for: tests/serve/)."""

import json
import os
import threading

import pytest

from ol_ray.config import load_config
from ol_ray.data.feedback import FeedbackError, FeedbackLog, FeedbackSource
from ol_ray.data.validation import FieldSpec


def log_for(path, *overrides, max_items=8):
    cfg = load_config(None, [f"stream.path={path}", "stream.source=feedback", "stream.text_field=sentence",
                             *overrides])
    return FeedbackLog(str(path), FieldSpec.from_config(cfg), max_items), cfg


@pytest.mark.parametrize("items, index, field", [
    ([], 0, "items"),
    ({"sentence": "a fine film"}, 0, "items"),  # one item is a list of one
    (["a fine film"], 0, "item"),
    ([{"sentence": "good", "label": 1}, {"label": 1}], 1, "sentence"),  # the stream's own field names
    ([{"sentence": "   ", "label": 1}], 0, "sentence"),
    ([{"sentence": "good"}], 0, "label"),
    ([{"sentence": "good", "label": "yes"}], 0, "label"),
    ([{"sentence": "good", "label": 2}], 0, "label"),
    ([{"sentence": "good", "label": 1}] * 9, 8, "items"),
    ([{"sentence": "x" * 2000, "label": 1}], 0, "item"),
])
def test_a_bad_item_refuses_the_call_naming_the_item_and_field_and_writes_nothing(tmp_path, items, index, field):
    log, _ = log_for(tmp_path / "feedback.jsonl", "stream.max_record_bytes=1000")
    with pytest.raises(FeedbackError) as caught:
        log.append(items)
    assert (caught.value.index, caught.value.field) == (index, field)
    assert not os.path.exists(tmp_path / "feedback.jsonl")


def test_acknowledged_items_are_on_disk_with_their_ids_and_writers_never_tear_a_line(tmp_path):
    log, _ = log_for(tmp_path / "feedback.jsonl")
    ids = log.append([{"sentence": "a fine film", "label": 1}, {"sentence": "dull", "label": 0, "id": "forged"}])
    assert len(set(ids)) == 2 and all(i.startswith("feedback:") for i in ids)
    lines = [json.loads(line) for line in open(tmp_path / "feedback.jsonl", encoding="utf-8")]
    assert [line["id"] for line in lines] == ids and lines[1]["label"] == 0  # a sender cannot choose the id
    writers = [threading.Thread(target=lambda: [log.append([{"sentence": "same", "label": 1}] * 3)
                                                for _ in range(20)]) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    lines = open(tmp_path / "feedback.jsonl", encoding="utf-8").read().splitlines()
    assert len(lines) == 2 + 4 * 20 * 3 and all(json.loads(line)["sentence"] for line in lines)


def test_the_source_follows_the_log_waits_for_a_whole_line_resumes_and_stops_when_idle(tmp_path):
    path = tmp_path / "feedback.jsonl"
    log, cfg = log_for(path, "stream.idle_timeout_s=5", "stream.poll_interval_s=1")
    ids = log.append([{"sentence": "one", "label": 1}, {"sentence": "two", "label": 0}])
    now = [0.0]
    source = FeedbackSource(str(path), cfg.stream, clock=lambda: now[0],
                            sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))
    records = source.records()
    assert [next(records).sample_id for _ in range(2)] == ids
    with open(path, "ab") as handle:
        handle.write(b'{"id": "feedback:half", "sentence": "thr')  # a writer in the middle of its line
    assert next(records) is None  # nothing whole yet
    with open(path, "ab") as handle:
        handle.write(b'ee", "label": 1}\n')
    assert next(records).sample_id == "feedback:half"
    resumed = FeedbackSource(str(path), cfg.stream, source.cursor())
    log.append([{"sentence": "four", "label": 0}])
    assert next(resumed.records()).raw.startswith(b'{"id": "feedback:')
    assert list(records)[-1] is None  # idle for idle_timeout_s: the stream ends


def test_a_stream_that_names_rows_by_a_field_of_its_own_gets_those_names_back(tmp_path):
    log, _ = log_for(tmp_path / "feedback.jsonl", "stream.id_field=review")
    assert log.append([{"review": "r-7", "sentence": "good", "label": 1}]) == ["r-7"]  # what the ledger will say
    with pytest.raises(FeedbackError) as caught:
        log.append([{"sentence": "no id", "label": 1}])
    assert caught.value.field == "review"
