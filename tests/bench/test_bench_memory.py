"""`ol-ray bench memory`: the long stream file, the fitted slopes, and a smoke run on a tiny model."""

import pytest

from ol_ray.bench.harness import read_csv
from ol_ray.bench.memory import memory_rows, repeat_stream_file, slope_per_samples
from ol_ray.cli import main
from ol_ray.config import ConfigError

from data_files import write_sst2_tsv


def test_the_stream_file_repeats_its_rows_under_one_header(tmp_path):
    source = tmp_path / "rows.tsv"
    source.write_bytes(b"sentence\tlabel\na \t0\nb \t1")  # no newline at the end
    out = repeat_stream_file(str(source), "tsv", 5, str(tmp_path / "long.tsv"))
    assert open(out, "rb").read() == b"sentence\tlabel\na \t0\nb \t1\na \t0\nb \t1\na \t0\n"
    bad = repeat_stream_file(str(source), "tsv", 6, str(tmp_path / "bad.tsv"), bad_every=3)  # every 3rd malformed
    malformed = b"a row without its label field"
    assert open(bad, "rb").read().splitlines()[1:] == [b"a \t0", b"b \t1", malformed, b"b \t1", b"a \t0", malformed]
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n')
    assert open(repeat_stream_file(str(lines), "jsonl", 3, str(tmp_path / "long.jsonl"))).read().count("\n") == 3
    with pytest.raises(ConfigError, match="TSV, CSV or JSONL"):
        repeat_stream_file(str(source), "parquet", 3, str(tmp_path / "x"))


def test_slopes_are_per_ten_thousand_samples_after_the_warmup():
    assert slope_per_samples([0, 10_000, 20_000], [100.0, 101.0, 102.0]) == pytest.approx(1.0)
    assert slope_per_samples([5], [1.0]) == 0.0
    records = [{"kind": "monitor", "samples_read": x, "driver_rss_mb": 200.0 + (50 if x == 0 else 0),
                "learner_rss_mb": 400.0 + x / 5_000} for x in range(0, 100_001, 10_000)]
    records += [{"kind": "checkpoint", "samples_read": x, "checkpoint_mb": 90.0, "state_mb": x / 10_000}
                for x in (20_000, 60_000, 100_000)]
    rows = {row["series"]: row for row in memory_rows(records, 100_000, warmup=0.2)}
    assert rows["driver RSS"]["slope_mb_per_10k_samples"] == pytest.approx(0.0, abs=1e-9)  # the warm-up is cut
    assert rows["driver RSS"]["peak_mb"] == 250.0 and rows["driver RSS"]["readings"] == 9
    assert rows["learner RSS"]["slope_mb_per_10k_samples"] == pytest.approx(2.0)
    assert rows["checkpoint state.json"]["slope_mb_per_10k_samples"] == pytest.approx(1.0)


def test_bench_memory_runs_a_tiny_model_over_a_repeated_stream(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    train = tmp_path / "train.tsv"
    write_sst2_tsv(train, sst2_rows[:150])
    out = tmp_path / "bench"
    code = main(["bench", "memory", "configs/sst2.yaml", f"stream.path={train}", "eval.path=",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.torch_threads=1",
                 "learner.num_cpus=0.5", "stream.window_size=1000", "--samples", "3000", "--every", "0.5",
                 "--warmup", "0", "--out", str(out)])
    assert code == 0
    readings = read_csv(str(out / "memory.csv"))
    assert readings[-1]["samples_read"] == 3000 and any(r["kind"] == "monitor" for r in readings)
    assert {r["kind"] for r in readings} == {"monitor", "checkpoint"}
    table = (out / "memory_table.md").read_text()
    assert "| learner RSS |" in table and "| checkpoint state.json |" in table
    assert (out / "memory.png").stat().st_size > 5_000
