"""`ol-ray bench selection`: the summary arithmetic on made-up curves, and a smoke run on the tiny model (no Ray)."""

import csv
import math

import pytest

from ol_ray.bench.selection import reach, summarise
from ol_ray.cli import main

from data_files import write_sst2_tsv


def curve(accuracies, per_eval=100, seconds=10.0):
    return [{"dev_accuracy": a, "samples_trained": i * per_eval, "update": i * 5, "wall_s": i * seconds}
            for i, a in enumerate(accuracies)]


def test_reach_and_the_ratios_to_random():
    curves = {("random", 64): [curve([0.5, 0.7, 0.8, 0.86]), curve([0.5, 0.7, 0.86, 0.87])],
              ("entropy", 64): [curve([0.5, 0.86, 0.9, 0.9]), curve([0.5, 0.8, 0.88, 0.9])],
              ("loss", 64): [curve([0.5, 0.6, 0.7, 0.8]), curve([0.5, 0.6, 0.7, 0.8])]}
    assert reach(curves[("random", 64)][0], 0.85, "samples_trained") == 300
    assert math.isnan(reach(curves[("loss", 64)][0], 0.85, "samples_trained"))
    rows = {row["strategy"]: row for row in summarise(curves, 0.85)}
    assert rows["random"]["samples_to_target"] == 250 and rows["random"]["samples_to_target_vs_random"] == 1
    assert rows["entropy"]["samples_to_target"] == 150
    assert rows["entropy"]["samples_to_target_vs_random"] == pytest.approx(0.6)
    assert rows["loss"]["reached_target"] == "0/2" and math.isnan(rows["loss"]["samples_to_target_vs_random"])
    assert rows["entropy"]["final_accuracy"] == pytest.approx(0.9)
    # seed by seed, the samples entropy needed to reach random's final accuracy: 100 of 300, then 200 of 300
    assert rows["entropy"]["samples_to_random_final_vs_random"] == pytest.approx(0.5)
    assert rows["random"]["samples_to_random_final_vs_random"] == pytest.approx(1.0)


def test_bench_selection_runs_end_to_end_on_the_tiny_model(tiny_model_dir, sst2_rows, tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_sst2_tsv(train, sst2_rows[:200])
    write_sst2_tsv(dev, sst2_rows[-100:])
    out = tmp_path / "bench"
    code = main(["bench", "selection", "configs/sst2.yaml", f"stream.path={train}", f"eval.path={dev}",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.lr=3e-3",
                 "learner.torch_threads=1", "selection.holdout_size=24", "selection.irreducible_epochs=1",
                 "--strategies", "random", "entropy", "rho_loss", "--seeds", "0", "1", "--updates", "6",
                 "--pools", "16", "--batch", "4", "--eval-every", "3", "--target", "0.5", "--out", str(out)])
    assert code == 0
    with open(out / "selection.csv", encoding="utf-8") as handle:
        points = list(csv.DictReader(handle))
    assert {(p["strategy"], p["seed"]) for p in points} == {(s, str(seed)) for s in ("random", "entropy", "rho_loss")
                                                           for seed in (0, 1)}
    assert sorted(p["update"] for p in points if p["strategy"] == "entropy" and p["seed"] == "0") == ["0", "3", "6"]
    assert all(p["samples_trained"] == str(4 * int(p["update"])) for p in points)
    table = (out / "selection_table.md").read_text()
    assert "| rho_loss | 16 | 2 |" in table
    assert (out / "selection.png").stat().st_size > 10_000
    again = tmp_path / "again"
    assert main(["bench", "selection", "configs/sst2.yaml", "--target", "0.5", "--from-csv",
                 str(out / "selection.csv"), "--out", str(again)]) == 0
    assert (again / "selection_table.md").read_text() == table
