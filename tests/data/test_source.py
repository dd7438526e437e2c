import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ol_ray.config import load_config
from ol_ray.data.factory import make_source
from ol_ray.data.files import DirectorySource, FileSource, MemorySource
from ol_ray.data.source import SourceError, paced, windows


def stream_cfg(*overrides):
    return load_config(None, ["stream.path=unused", "stream.text_field=sentence", *overrides]).stream


def write_tsv(path, rows, header="sentence\tlabel"):
    path.write_text(header + "\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    return str(path)


ROWS = [(f"text number {i} ", i % 2) for i in range(10)]


def all_records(source):
    return [r for r in source.records() if r is not None]


def test_file_source_reads_in_order_with_stable_ids(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", ROWS)
    records = all_records(FileSource(path, stream_cfg()))
    assert [r.sample_id for r in records] == [f"a.tsv:{i}" for i in range(1, 11)]
    assert records[0].raw == b"text number 0 \t0"
    assert records[0].record_format.columns == ("sentence", "label")


def test_file_source_resumes_from_its_cursor(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", ROWS)
    source = FileSource(path, stream_cfg())
    iterator = source.records()
    first = [next(iterator) for _ in range(4)]
    resumed = all_records(FileSource(path, stream_cfg(), source.cursor()))
    assert [r.sample_id for r in first + resumed] == [f"a.tsv:{i}" for i in range(1, 11)]


def test_shuffled_replay_is_seeded_complete_and_resumable(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", ROWS)
    cfg = stream_cfg("stream.shuffle_seed=3")
    order = [r.sample_id for r in all_records(FileSource(path, cfg))]
    assert order != [f"a.tsv:{i}" for i in range(1, 11)]
    assert sorted(order) == sorted(f"a.tsv:{i}" for i in range(1, 11))
    assert order == [r.sample_id for r in all_records(FileSource(path, cfg))]
    source = FileSource(path, cfg)
    iterator = source.records()
    head = [next(iterator).sample_id for _ in range(3)]
    tail = [r.sample_id for r in all_records(FileSource(path, cfg, source.cursor()))]
    assert head + tail == order
    with pytest.raises(SourceError, match="shuffle seed"):
        FileSource(path, stream_cfg("stream.shuffle_seed=4"), source.cursor())


def test_jsonl_csv_and_parquet_sources(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence": t, "label": y}) + "\n" for t, y in ROWS[:3]))
    assert len(all_records(FileSource(str(jsonl), stream_cfg()))) == 3
    csv_file = tmp_path / "a.csv"
    csv_file.write_text('sentence,label\n"hello, world",1\nplain,0\n')
    records = all_records(FileSource(str(csv_file), stream_cfg()))
    assert [r.raw for r in records] == [b'"hello, world",1', b"plain,0"]
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"sentence": [t for t, _ in ROWS], "label": [y for _, y in ROWS]}), parquet)
    source = FileSource(str(parquet), stream_cfg())
    iterator = source.records()
    first = [next(iterator) for _ in range(6)]
    rest = all_records(FileSource(str(parquet), stream_cfg(), source.cursor()))
    assert [json.loads(r.raw)["sentence"] for r in first + rest] == [t for t, _ in ROWS]


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FileSource(str(tmp_path / "none.tsv"), stream_cfg())
    odd = tmp_path / "a.xml"
    odd.write_text("<a/>")
    with pytest.raises(SourceError, match="stream.format"):
        FileSource(str(odd), stream_cfg())


def test_windows_sizes_budget_and_cursor(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", ROWS)
    cfg = stream_cfg("stream.window_size=4", "stream.max_samples=9")
    result = list(windows(FileSource(path, cfg), cfg))
    assert [len(w) for w in result] == [4, 4, 1]
    assert [w.index for w in result] == [0, 1, 2]
    assert result[1].cursor["row"] == 8
    resumed = list(windows(FileSource(path, cfg, result[1].cursor), cfg))
    assert [r["sample_id"] for r in resumed[0].records] == ["a.tsv:9", "a.tsv:10"]


def test_directory_source_follows_new_files_until_idle(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_tsv(folder / "001.tsv", ROWS[:3])
    (folder / "002.tsv.tmp").write_text("being written")
    now = [0.0]
    arrivals = []

    def sleep(seconds):
        now[0] += seconds
        if not arrivals:  # a producer drops a new file while the source waits
            arrivals.append(write_tsv(folder / "002.tsv", ROWS[3:5], header="label\tsentence"))

    cfg = stream_cfg("stream.source=directory", "stream.window_size=10", "stream.idle_timeout_s=5",
                     "stream.poll_interval_s=1", "stream.max_window_wait_s=100")
    source = DirectorySource(str(folder), cfg, clock=lambda: now[0], sleep=sleep)
    result = list(windows(source, cfg, clock=lambda: now[0], sleep=sleep))
    # the second file has other columns, so it starts a new window
    assert [[r["sample_id"] for r in w.records] for w in result] == [
        ["001.tsv:1", "001.tsv:2", "001.tsv:3"], ["002.tsv:1", "002.tsv:2"]]
    assert result[1].record_format.columns == ("label", "sentence")
    assert now[0] >= 5  # stopped by the idle timeout, not before
    assert source.cursor()["done"] == ["001.tsv", "002.tsv"]


def followed_folder(tmp_path):
    """An empty folder to follow, and a config that stops following it almost at once."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder, stream_cfg("stream.source=directory", "stream.idle_timeout_s=0.01", "stream.poll_interval_s=0.01")


def test_budget_counts_what_a_resumed_stream_already_read(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", ROWS)
    cfg = stream_cfg("stream.window_size=4", "stream.max_samples=9")
    first = next(windows(FileSource(path, cfg), cfg))
    resumed = list(windows(FileSource(path, cfg, first.cursor), cfg, first_index=1, already_read=4))
    assert [len(w) for w in resumed] == [4, 1] and [w.index for w in resumed] == [1, 2]
    assert list(windows(FileSource(path, cfg), cfg, already_read=9)) == []


def test_stop_ends_a_followed_folder_while_it_idles(tmp_path):
    import threading

    folder, _ = followed_folder(tmp_path)
    cfg = stream_cfg("stream.source=directory", "stream.idle_timeout_s=0", "stream.poll_interval_s=0.01")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert list(windows(DirectorySource(str(folder), cfg), cfg, stop=stop)) == []  # idle_timeout 0: only stop ends it


def test_resuming_inside_a_file_that_was_removed(tmp_path):
    folder, cfg = followed_folder(tmp_path)
    write_tsv(folder / "001.tsv", ROWS[:4])
    source = DirectorySource(str(folder), cfg)
    iterator = source.records()
    next(iterator)
    cursor = source.cursor()
    os.remove(folder / "001.tsv")
    write_tsv(folder / "002.tsv", ROWS[:1])
    resumed = DirectorySource(str(folder), cfg, cursor)
    assert [r.sample_id for r in all_records(resumed)] == ["002.tsv:1"]
    assert resumed.cursor()["rejected"][0]["file"] == "001.tsv"


def test_directory_source_rejects_unreadable_files_and_goes_on(tmp_path):
    folder, cfg = followed_folder(tmp_path)
    (folder / "000-empty.tsv").write_bytes(b"")
    (folder / "001-badheader.tsv").write_bytes(b"\xff\xfe\tlabel\ntext\t1\n")
    (folder / "002-folder.tsv").mkdir()
    write_tsv(folder / "003-good.tsv", ROWS[:2])
    source = DirectorySource(str(folder), cfg)
    assert [r.sample_id for r in all_records(source)] == ["003-good.tsv:1", "003-good.tsv:2"]
    rejected = {item["file"]: item["reason"] for item in source.cursor()["rejected"]}
    assert set(rejected) == {"001-badheader.tsv", "002-folder.tsv"}  # an empty file is an empty stream, not an error
    assert "UTF-8" in rejected["001-badheader.tsv"] and "not a regular file" in rejected["002-folder.tsv"]
    assert "000-empty.tsv" in source.cursor()["done"]


def test_directory_source_survives_a_file_deleted_before_it_is_read(tmp_path):
    folder, cfg = followed_folder(tmp_path)
    write_tsv(folder / "001.tsv", ROWS[:1])
    source = DirectorySource(str(folder), cfg)
    listed = source._new_files()
    os.remove(folder / "001.tsv")  # the writer takes it back between the listing and the read
    assert source._open(listed[0]) is None
    assert source.cursor()["rejected"] == [{"file": "001.tsv", "reason": "deleted before it was read"}]
    assert all_records(source) == []


def test_empty_file_is_an_empty_stream(tmp_path):
    empty = tmp_path / "a.tsv"
    empty.write_bytes(b"")
    assert all_records(FileSource(str(empty), stream_cfg())) == []


def test_directory_cursor_skips_finished_files(tmp_path):
    folder, cfg = followed_folder(tmp_path)
    write_tsv(folder / "001.tsv", ROWS[:3])
    source = DirectorySource(str(folder), cfg)
    assert len(all_records(source)) == 3
    write_tsv(folder / "002.tsv", ROWS[:2])
    assert [r.sample_id for r in all_records(DirectorySource(str(folder), cfg, source.cursor()))] == [
        "002.tsv:1", "002.tsv:2"]


def test_partial_window_closes_after_max_wait():
    cfg = stream_cfg("stream.source=memory", "stream.window_size=100", "stream.rate=2", "stream.max_window_wait_s=2")
    now = [0.0]
    rows = [{"sentence": t, "label": y} for t, y in ROWS]
    result = list(windows(MemorySource(rows, cfg), cfg, clock=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s)))
    assert sum(len(w) for w in result) == 10
    assert all(len(w) <= 5 for w in result)  # 2 samples/s for at most 2 s per window, plus the first


def test_pacing_spaces_records():
    now = [0.0]
    times = []
    for record in paced(iter(range(5)), rate=10, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)):
        times.append(now[0])
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_memory_source_needs_rows():
    with pytest.raises(SourceError, match="rows"):
        make_source(stream_cfg("stream.source=memory"))


def test_hub_source_reads_a_local_dataset_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"sentence": ["good film", "bad film", "fine"], "label": [1, 0, 1]}),
                   folder / "data" / "train-00000-of-00001.parquet")
    cfg = stream_cfg("stream.path=" + str(tmp_path / "absent.tsv"), f"stream.hub_dataset={folder}")
    with pytest.raises(SourceError, match="absent.tsv does not exist"):  # no fallback unless the config asks
        make_source(cfg)
    cfg = stream_cfg("stream.path=" + str(tmp_path / "absent.tsv"), f"stream.hub_dataset={folder}",
                     "stream.hub_fallback=true")
    source = make_source(cfg)  # the file is absent, so the hub dataset stands in
    records = all_records(source)
    assert [json.loads(r.raw) for r in records][0] == {"sentence": "good film", "label": 1}
    assert [r.sample_id.rsplit(":", 1)[1] for r in records] == ["1", "2", "3"]
    assert source.cursor()["row"] == 3
    shuffled = all_records(make_source(stream_cfg(f"stream.hub_dataset={folder}", "stream.source=hub",
                                                  "stream.shuffle_seed=1")))
    by_id = {r.sample_id: r.raw for r in shuffled}
    assert all(by_id[r.sample_id] == r.raw for r in records)  # ids follow rows, not replay positions


def test_a_json_array_file_streams_its_rows_and_resumes(tmp_path):
    rows = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(6)]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    source = FileSource(str(tmp_path / "a.json"), stream_cfg())
    first = [next(iter(source.records())) for _ in range(1)]
    assert source.kind == "json" and json.loads(first[0].raw) == rows[0] and first[0].sample_id == "a.json:1"
    rest = all_records(FileSource(str(tmp_path / "a.json"), stream_cfg(), source.cursor()))
    assert [json.loads(r.raw)["output"] for r in rest] == [f"answer {i}" for i in range(1, 6)]
    shuffled = all_records(FileSource(str(tmp_path / "a.json"), stream_cfg("stream.shuffle_seed=3")))
    assert sorted(r.sample_id for r in shuffled) == sorted(f"a.json:{i}" for i in range(1, 7))
    (tmp_path / "lines.json").write_text("".join(json.dumps(row) + "\n" for row in rows))  # JSON lines named .json
    assert len(all_records(FileSource(str(tmp_path / "lines.json"), stream_cfg()))) == 6
    (tmp_path / "bad.json").write_text("[{\"a\": 1},")
    with pytest.raises(SourceError, match="not a JSON array"):
        all_records(FileSource(str(tmp_path / "bad.json"), stream_cfg()))


def test_a_text_file_streams_its_paragraphs_and_resumes(tmp_path):
    (tmp_path / "play.txt").write_text("First:\nSpeak.\n\n\nAll:\nWe speak.\n  \nSecond:\nNo.")
    source = FileSource(str(tmp_path / "play.txt"), stream_cfg())
    first = next(iter(source.records()))
    assert first.raw == b"First:\nSpeak." and first.record_format.columns == ("sentence",)
    rest = all_records(FileSource(str(tmp_path / "play.txt"), stream_cfg(), source.cursor()))
    assert [(r.sample_id, r.raw) for r in rest] == [("play.txt:2", b"All:\nWe speak."), ("play.txt:3", b"Second:\nNo.")]
    shuffled = FileSource(str(tmp_path / "play.txt"), stream_cfg("stream.shuffle_seed=1"))
    taken = next(iter(shuffled.records()))
    resumed = all_records(FileSource(str(tmp_path / "play.txt"), stream_cfg("stream.shuffle_seed=1"),
                                     shuffled.cursor()))
    assert sorted([taken.sample_id] + [r.sample_id for r in resumed]) == ["play.txt:1", "play.txt:2", "play.txt:3"]


def test_a_followed_folder_leaves_text_files_alone_unless_told_they_are_data(tmp_path):
    write_tsv(tmp_path / "a.tsv", ROWS[:2])
    (tmp_path / "notes.txt").write_text("not data\n\nat all")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"sentence": "x", "label": 1}]).encode())
    records = all_records(DirectorySource(str(tmp_path), stream_cfg("stream.idle_timeout_s=0.01")))
    assert sorted(r.sample_id for r in records) == ["a.tsv:1", "a.tsv:2", "bom.json:1"]
    as_text = all_records(DirectorySource(str(tmp_path),
                                          stream_cfg("stream.idle_timeout_s=0.01", "stream.format=text")))
    assert "notes.txt:2" in {r.sample_id for r in as_text}
