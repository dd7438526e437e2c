"""A stream in phases: files in order with per-phase budgets and fields, ids prefixed by phase, windows that never
span two phases, and a cursor that resumes inside a phase or at its boundary."""

import pytest

from ol_ray.config import load_config
from ol_ray.data.factory import make_source
from ol_ray.data.phases import PhasedSource, config_for_phase
from ol_ray.data.source import SourceError, windows


@pytest.fixture
def phase_files(tmp_path):
    (tmp_path / "a").mkdir()
    first = tmp_path / "a" / "train.tsv"
    first.write_text("sentence\tlabel\n" + "".join(f"review {i}\t{i % 2}\n" for i in range(1, 8)))
    second = tmp_path / "train.csv"
    second.write_text("text,sentiment\n" + "".join(f"tweet {i},{'negative' if i % 3 else 'positive'}\n"
                                                   for i in range(1, 6)))
    return str(first), str(second)


def phased_config(first, second, *overrides):
    return load_config(None, [
        f"stream.phases=[{{name: reviews, path: {first}, max_samples: 5}}, {{name: tweets, path: {second}, "
        f"text_field: text, label_field: sentiment, label_names: [negative, positive]}}]",
        "stream.text_field=sentence", "stream.window_size=4", *overrides])


def test_phases_follow_each_other_with_their_budgets_and_prefixed_ids(phase_files):
    cfg = phased_config(*phase_files)
    source = make_source(cfg.stream)
    records = [record for record in source.records() if record is not None]
    assert [r.sample_id for r in records] == [f"reviews/train.tsv:{i}" for i in range(1, 6)] + \
        [f"tweets/train.csv:{i}" for i in range(1, 6)]
    assert {r.record_format.phase for r in records[:5]} == {"reviews"}
    assert records[5].record_format.columns == ("text", "sentiment")
    assert config_for_phase(cfg, "tweets").stream.label_field == "sentiment"
    assert config_for_phase(cfg, "reviews").stream.label_field == "label"


def test_windows_close_at_a_phase_boundary(phase_files):
    cfg = phased_config(*phase_files)
    sizes = [(len(w), w.record_format.phase) for w in windows(make_source(cfg.stream), cfg.stream)]
    assert sizes == [(4, "reviews"), (1, "reviews"), (4, "tweets"), (1, "tweets")]


@pytest.mark.parametrize("taken", [3, 5, 7])  # inside the first phase, at its boundary, inside the second
def test_a_cursor_resumes_where_the_stream_stopped(phase_files, taken):
    cfg = phased_config(*phase_files)
    source = make_source(cfg.stream)
    ids = []
    for record in source.records():
        ids.append(record.sample_id)
        if len(ids) == taken:
            break
    cursor = source.cursor()
    rest = [r.sample_id for r in PhasedSource(cfg.stream, cursor).records()]
    every = [r.sample_id for r in make_source(cfg.stream).records()]
    assert ids + rest == every


def test_a_missing_phase_file_is_named(phase_files, tmp_path):
    cfg = phased_config(phase_files[0], str(tmp_path / "gone.csv"))
    with pytest.raises(SourceError, match="stream phase 'tweets': file .*gone.csv does not exist"):
        make_source(cfg.stream)
