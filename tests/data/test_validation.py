import dataclasses
import json

import numpy as np
import pytest

from ol_ray.data.source import RecordFormat
from ol_ray.data.validation import FieldSpec, RowError, parse_record, rows_to_columns, split_records

TSV = RecordFormat("tsv", ("sentence", "label"))
CSV = RecordFormat("csv", ("id", "sentence", "label"))
JSON = RecordFormat("json")
SPEC = FieldSpec("sentence", "label", "", (), 2, 50)


def test_good_rows_parse():
    row = parse_record("a:1", "a fine film \t1".encode(), TSV, SPEC)
    assert (row.sample_id, row.text, row.label, row.text_truncated) == ("a:1", "a fine film ", 1, False)
    row = parse_record("a:2", json.dumps({"sentence": "ok", "label": 0.0}).encode(), JSON, SPEC)
    assert row.label == 0
    row = parse_record("a:3", b'7,"quoted, with comma",1', CSV, FieldSpec("sentence", "label", "id", (), 2, 50))
    assert (row.sample_id, row.text) == ("7", "quoted, with comma")


@pytest.mark.parametrize("raw, record_format, code", [
    (b"only one field", TSV, "field_count"),
    (b'7,"missing the label"', CSV, "field_count"),
    (b'7,text,1,extra', CSV, "field_count"),
    (b'7,"unclosed quote,1', CSV, "malformed_csv"),
    (b"a\tb\t1", TSV, "field_count"),
    (b"bad \xff\xfe bytes\t1", TSV, "undecodable"),
    (b"nul\x00byte\t1", TSV, "nul_bytes"),
    (b"   \t1", TSV, "empty_text"),
    (b"", TSV, "empty_row"),
    (b"text\t2", TSV, "label_out_of_range"),
    (b"text\t-1", TSV, "label_out_of_range"),
    (b"text\tpositive", TSV, "bad_label"),
    (b"text\t", TSV, "bad_label"),
    (b'{"sentence": "x", "label": 1', JSON, "malformed_json"),
    (b'["sentence", 1]', JSON, "malformed_json"),
    (b'{"label": 1}', JSON, "missing_text"),
    (b'{"sentence": "x"}', JSON, "missing_label"),
    (b'{"sentence": 5, "label": 1}', JSON, "bad_text"),
    (b'{"sentence": "x", "label": true}', JSON, "bad_label"),
    (b'{"sentence": "x", "label": 0.5}', JSON, "bad_label"),
    (b'{"sentence": "x", "label": [1]}', JSON, "bad_label"),
])
def test_bad_rows_raise_with_a_code(raw, record_format, code):
    with pytest.raises(RowError) as error:
        parse_record("a:1", raw, record_format, SPEC)
    assert error.value.code == code
    assert str(error.value)


def test_long_text_is_truncated_and_flagged():
    row = parse_record("a:1", ("x" * 80 + "\t0").encode(), TSV, SPEC)
    assert row.text == "x" * 50 and row.text_truncated


def test_label_names_map_strings_to_classes():
    spec = FieldSpec("sentence", "label", "", ("negative", "positive"), 2, 50)
    assert parse_record("a:1", b"meh\tnegative", TSV, spec).label == 0
    assert parse_record("a:1", b"yay\tpositive", TSV, spec).label == 1
    with pytest.raises(RowError, match="negative, positive"):
        parse_record("a:1", b"hm\tneutral", TSV, spec)


def test_missing_id_field():
    with pytest.raises(RowError) as error:
        parse_record("a:1", b',text,1', CSV, FieldSpec("sentence", "label", "id", (), 2, 50))
    assert error.value.code == "missing_id"


def test_split_records_keeps_every_row_somewhere():
    raws = [b"good\t1", b"bad\t9", b"\xff\t1", b"fine\t0"]
    ids = np.array(["r1", "r2", "r3", "r4"], dtype=object)
    good, bad = split_records(ids, raws, TSV, SPEC, window=3)
    assert [r.sample_id for r in good] == ["r1", "r4"]
    assert [(b["sample_id"], b["code"], b["window"]) for b in bad] == [("r2", "label_out_of_range", 3),
                                                                      ("r3", "undecodable", 3)]
    assert "\ufffd" in bad[1]["raw"]  # undecodable bytes are kept as replacement characters


LM_SPEC = FieldSpec("text", "label", "", (), 2, 40, causal_lm=True, prompt_fields=("instruction", "input"),
                    response_field="output", rating_field="rating")


def lm_row(fields):
    return parse_record("r:1", json.dumps(fields).encode(), JSON, LM_SPEC)


def test_causal_lm_rows_are_chats_prompts_with_responses_or_texts():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    row = lm_row({"messages": chat, "text": "ignored"})
    assert json.loads(row.messages) == chat and row.text == "" and row.label == 0
    row = lm_row({"instruction": "Add 2 and 2.", "input": "", "output": "4"})
    assert (row.prompt, row.text) == ("Add 2 and 2.", "4")
    row = lm_row({"instruction": "Translate.", "input": "chat", "output": "cat"})
    assert row.prompt == "Translate.\n\nchat"
    row = lm_row({"text": "x" * 50})
    assert (row.text, row.prompt, row.text_truncated) == ("x" * 40, "", True)
    row = lm_row({"instruction": "a" * 30 + "b" * 30, "input": None, "output": "4"})  # null input: no input
    assert row.prompt == "a" * 10 + "b" * 30 and row.text_truncated  # a prompt keeps its end, next to the response
    row = lm_row({"messages": [{"role": "user", "content": "q" * 50}, {"role": "assistant", "content": "a"}]})
    assert json.loads(row.messages)[0]["content"] == "q" * 40 and row.text_truncated
    columns = rows_to_columns([row], window=3, causal_lm=True)
    assert set(columns) >= {"prompt", "messages", "text"} and columns["window"].tolist() == [3]


def test_a_rating_from_0_to_1_or_a_thumbs_up_or_down_travels_with_the_row():
    chat = [{"role": "assistant", "content": "hello"}]
    rows = [lm_row({"instruction": "Add.", "output": "4", "rating": 0.25}), lm_row({"messages": chat, "rating": False}),
            lm_row({"text": "unrated"}), lm_row({"text": "liked", "rating": True}), lm_row({"text": "x", "rating": 0})]
    assert [row.rating for row in rows] == [0.25, 0.0, 1.0, 1.0, 0.0]
    columns = rows_to_columns(rows, window=0, causal_lm=True)
    assert columns["rating"].dtype == np.float32 and columns["rating"].tolist() == [0.25, 0.0, 1.0, 1.0, 0.0]
    as_text = [lm_row({"text": "x", "rating": value}).rating for value in ("0.5", " true", "FALSE", "", "1")]
    assert as_text == [0.5, 1.0, 0.0, 1.0, 1.0]  # CSV and TSV fields are text
    unrated = dataclasses.replace(LM_SPEC, rating_field="")  # the default: no rating field, a 1-5 column is data
    assert parse_record("r:1", b'{"text": "x", "rating": 5}', JSON, unrated).rating == 1.0


@pytest.mark.parametrize("fields, code", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "bad_messages"),
    ({"messages": "not json"}, "bad_messages"),
    ({"messages": [{"role": "assistant"}]}, "bad_messages"),
    ({"messages": []}, "bad_messages"),
    ({"instruction": "Add.", "output": "  "}, "empty_text"),
    ({"input": "", "output": "4"}, "missing_text"),
    ({"output": "4"}, "missing_text"),
    ({"instruction": 3, "output": "4"}, "bad_text"),
    ({"label": 1}, "missing_text"),
    ({"text": "fine", "rating": 1.5}, "bad_rating"),
    ({"text": "fine", "rating": -0.1}, "bad_rating"),
    ({"text": "fine", "rating": "good"}, "bad_rating"),
    ({"text": "fine", "rating": "5"}, "bad_rating"),
    ({"messages": [{"role": "assistant", "content": "a"}], "rating": [1]}, "bad_rating"),
])
def test_bad_causal_lm_rows_are_quarantined_with_a_reason(fields, code):
    with pytest.raises(RowError) as error:
        lm_row(fields)
    assert error.value.code == code


def test_paragraphs_of_a_text_file_are_texts():
    row = parse_record("p:1", b"First:\nSpeak.", RecordFormat("text", ("text",)), LM_SPEC)
    assert row.text == "First:\nSpeak."
