"""`ol-ray bench batching`: the summary arithmetic, and a smoke run of every policy on the tiny model (no Ray)."""

import csv

import pytest

from ol_ray.batching.base import POLICIES
from ol_ray.bench.batching import summarise
from ol_ray.cli import main

from data_files import write_sst2_tsv


def test_summary_means_over_seeds_and_wall_time_against_fixed():
    def run(final, wall, sizes):
        samples = list(__import__("itertools").accumulate(sizes))
        return ([{"dev_accuracy": 0.5, "wall_s": 0.0}, {"dev_accuracy": final, "wall_s": wall}],
                [{"batch_size": b, "samples_trained": s, "rss_mb": 100.0 + s} for b, s in zip(sizes, samples)])

    rows = {row["policy"]: row for row in summarise({
        "fixed": [run(0.8, 100.0, [16] * 4), run(0.9, 120.0, [16] * 4)],
        "adaptive": [run(0.8, 50.0, [16, 16, 32]), run(0.8, 60.0, [16, 16, 32])]})}
    assert rows["fixed"]["final_accuracy"] == pytest.approx(0.85) and rows["fixed"]["updates"] == 4
    assert rows["adaptive"]["wall_vs_fixed"] == pytest.approx(0.5) and rows["adaptive"]["max_batch"] == 32
    assert rows["adaptive"]["mean_batch"] == pytest.approx(64 / 3) and rows["adaptive"]["peak_rss_mb"] == 164.0


def test_bench_batching_runs_every_policy_on_the_tiny_model(tiny_model_dir, sst2_rows, tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_sst2_tsv(train, sst2_rows[:300])
    write_sst2_tsv(dev, sst2_rows[-100:])
    out = tmp_path / "bench"
    code = main(["bench", "batching", "configs/sst2.yaml", f"stream.path={train}", f"eval.path={dev}",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.lr=3e-3",
                 "learner.torch_threads=1", "selection.pool_size=8", "batching.batch_size=4",
                 "batching.min_batch_size=2", "batching.max_batch_size=16", "batching.cooldown_updates=2",
                 "batching.period_s=0.01", "--policies", *sorted(POLICIES), "--seeds", "0", "--samples", "40",
                 "--chunk", "8", "--eval-every", "16", "--out", str(out)])
    assert code == 0
    with open(out / "batching.csv", encoding="utf-8") as handle:
        points = list(csv.DictReader(handle))
    with open(out / "batching_updates.csv", encoding="utf-8") as handle:
        steps = list(csv.DictReader(handle))
    for policy in POLICIES:
        evals = [p for p in points if p["policy"] == policy]
        assert evals[0]["samples_trained"] == "0" and int(evals[-1]["samples_trained"]) >= 40
        sizes = [int(s["batch_size"]) for s in steps if s["policy"] == policy]
        assert sizes and all(2 <= size <= 16 for size in sizes)
        assert all(int(s["pool_size"]) == 2 * int(s["batch_size"]) for s in steps if s["policy"] == policy)
    table = (out / "batching_table.md").read_text()
    assert all(f"| {policy} | 1 |" in table for policy in POLICIES)
    assert (out / "batching.png").stat().st_size > 10_000
    again = tmp_path / "again"
    assert main(["bench", "batching", "configs/sst2.yaml", "--from-dir", str(out), "--out", str(again)]) == 0
    assert (again / "batching_table.md").read_text() == table
