import json

from ol_ray.quarantine import QuarantineSink


def test_sink_appends_and_counts(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    sink = QuarantineSink(str(path))
    sink.write([{"sample_id": "a:1", "code": "empty_text", "reason": "empty text", "window": 0, "raw": ""}])
    sink.write([{"sample_id": "a:2", "code": "empty_text", "reason": "empty text", "window": 0, "raw": ""},
                {"sample_id": "a:3", "code": "bad_label", "reason": "label 'x' ...", "window": 1, "raw": "x"}])
    assert sink.close() == {"samples_quarantined": 3, "quarantine_reasons": {"empty_text": 2, "bad_label": 1}}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["sample_id"] for line in lines] == ["a:1", "a:2", "a:3"]
