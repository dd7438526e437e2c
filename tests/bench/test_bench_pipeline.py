"""`ol-ray bench pipeline`: the figures from hand-made records, and a smoke run of both sides on the tiny model,
whose pipeline run `ol-ray report` then reports."""

import pytest

from ol_ray.bench.harness import read_csv
from ol_ray.bench.pipeline import side_figures, summarise
from ol_ray.cli import main

from data_files import write_sst2_tsv


def test_side_figures_come_from_the_learner_records():
    records = [{"kind": "eval", "dev_accuracy": 0.5, "eval_s": 1.0, "time": 102.0},
               {"kind": "update", "samples_trained": 4, "batch_size": 4, "step_s": 0.5, "staleness_mean": 0.0,
                "staleness_max": 0, "time": 104.0},
               {"kind": "update", "samples_trained": 8, "batch_size": 4, "step_s": 0.5, "staleness_mean": 2.0,
                "staleness_max": 3, "time": 106.0},
               {"kind": "eval", "dev_accuracy": 0.6, "eval_s": 1.0, "time": 110.0}]
    figures = side_figures(records, started=100.0)
    assert figures["wall_s"] == 10.0 and figures["trained_samples_per_s"] == 0.8
    assert figures["steady_samples_per_s"] == 2.0 and figures["first_update_s"] == 4.0
    assert figures["learner_utilisation"] == pytest.approx(0.3)  # two steps and two evaluations of 10 s
    assert (figures["staleness_mean"], figures["staleness_max"], figures["dev_accuracy"]) == (1.0, 3, 0.6)
    with pytest.raises(ValueError, match="no update"):
        side_figures(records[:1], started=100.0)


def test_ratios_are_taken_seed_by_seed():
    def row(side, seed, rate):
        return {"side": side, "seed": seed, "updates": 2, "samples_trained": 8, "wall_s": 8 / rate,
                "trained_samples_per_s": rate, "steady_samples_per_s": 2 * rate, "first_update_s": 1.0,
                "learner_utilisation": 0.5, "staleness_mean": 0.0, "staleness_max": 0, "dev_accuracy": 0.6}

    table = summarise([row("plain loop", 0, 10.0), row("pipeline", 0, 5.0), row("plain loop", 1, 20.0),
                       row("pipeline", 1, 20.0)])
    assert table[0]["trained_samples_per_s_ratio"] == 1.0 and table[1]["trained_samples_per_s_ratio"] == 0.75
    assert table[1]["trained_samples_per_s"] == 12.5 and table[1]["steady_samples_per_s_ratio"] == 0.75


def test_bench_pipeline_and_report_run_on_the_tiny_model(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_sst2_tsv(train, sst2_rows[:200])
    write_sst2_tsv(dev, sst2_rows[-100:])
    out = tmp_path / "bench"
    code = main(["bench", "pipeline", "configs/sst2.yaml", f"stream.path={train}", f"eval.path={dev}",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.lr=3e-3",
                 "learner.torch_threads=1", "learner.num_cpus=0.5", "eval.every_updates=4", "ray.num_cpus=2",
                 "stream.window_size=40", "--updates", "8", "--pool", "8", "--batch", "4", "--plain-threads", "1",
                 "--out", str(out)])
    assert code == 0
    rows = read_csv(str(out / "pipeline.csv"))
    assert [r["side"] for r in rows] == ["plain loop", "pipeline"]
    plain, piped = rows
    assert plain["updates"] == piped["updates"] == 8 and plain["samples_trained"] == piped["samples_trained"] == 32
    assert plain["staleness_max"] == 0 and piped["accounting_ok"] == "True"
    assert 0 < plain["learner_utilisation"] <= 1 and 0 < piped["learner_utilisation"] <= 1
    assert "trained_samples_per_s_ratio" in (out / "pipeline_table.md").read_text()
    assert main(["report", str(out / "pipeline-seed0")]) == 0
    text = (out / "pipeline-seed0" / "report.md").read_text()
    assert all(f"report/{name}.png" in text for name in ("accuracy", "training", "speed", "labels"))
