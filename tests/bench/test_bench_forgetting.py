"""`ol-ray bench forgetting`: the summary arithmetic, and a smoke run of its arms on the tiny model (no Ray)."""

import csv

import pytest

from ol_ray.bench.forgetting import summarise
from ol_ray.cli import main

from conftest import DATA, real_data
from data_files import write_sst2_tsv


def run(matrix, start, final_balanced, new, replayed):
    return {"final_accuracy": dict(zip(["a", "b"], matrix[1])),
            "final_balanced_accuracy": dict(zip(["a", "b"], final_balanced)),
            "continual_metrics": {"forgetting": [matrix[0][0] - matrix[1][0]], "average_accuracy": sum(matrix[1]) / 2,
                                  "backward_transfer": matrix[1][0] - matrix[0][0],
                                  "forward_transfer": matrix[0][1] - start},
            "updates": 10, "samples_trained": new, "samples_replayed": replayed, "wall_s": 5.0, "task_matrix": matrix,
            "accuracy_history": [{"accuracy": dict(zip(["a", "b"], row))} for row in (matrix[0], matrix[1],
                                                                                     matrix[1])]}


def test_summary_sets_forgetting_and_new_domain_accuracy_against_finetuning():
    rows = {row["arm"]: row for row in summarise({
        "finetune": [run([[0.9, 0.6], [0.7, 0.9]], 0.5, [0.7, 0.8], 160, 0),
                     run([[0.9, 0.6], [0.8, 0.9]], 0.5, [0.8, 0.8], 160, 0)],
        "replay": [run([[0.9, 0.6], [0.85, 0.89]], 0.5, [0.85, 0.8], 120, 40)]}, ["a", "b"], batch=16)}
    assert rows["finetune"]["forgetting_a"] == pytest.approx(0.15) and rows["finetune"]["final_b"] == 0.9
    assert rows["replay"]["forgetting_a_vs_finetune"] == pytest.approx(0.05 / 0.15)
    assert rows["finetune"]["last3_a"] == pytest.approx((0.9 + 0.7 + 0.7 + 0.9 + 0.8 + 0.8) / 6)
    assert rows["finetune"]["forgetting_a_last3"] == pytest.approx(0.9 - (0.9 + 0.7 + 0.7 + 0.9 + 0.8 + 0.8) / 6)
    assert rows["replay"]["final_b_minus_finetune_points"] == pytest.approx(-1.0)
    assert rows["replay"]["samples_trained_total"] == 160 == rows["finetune"]["samples_trained_total"]  # new + replayed
    assert rows["replay"]["samples_new"] == 120 and rows["replay"]["samples_replayed"] == 40


def test_bench_forgetting_runs_its_arms_on_the_tiny_model(tiny_model_dir, sst2_rows, tmp_path):
    reviews, reviews_dev = tmp_path / "reviews.tsv", tmp_path / "reviews_dev.tsv"
    write_sst2_tsv(reviews, sst2_rows[:200])
    write_sst2_tsv(reviews_dev, sst2_rows[-60:])
    tweets = real_data(f"{DATA}/airline_tweets/train.tsv")
    out = tmp_path / "bench"
    code = main(["bench", "forgetting", "configs/forgetting.yaml", f"model.name_or_path={tiny_model_dir}",
                 f"stream.phases=[{{name: reviews, path: {reviews}}}, {{name: tweets, path: {tweets}}}]",
                 f"eval.sets=[{{name: reviews, path: {reviews_dev}}}, {{name: tweets, path: {DATA}/airline_tweets/"
                 f"test.tsv, max_samples: 60}}]", "eval.every_updates=2", "model.max_length=32", "learner.lr=3e-3",
                 "learner.torch_threads=1", "selection.pool_size=8", "batching.batch_size=8",
                 "continual.replay_size=16", "--seeds", "0", "--updates", "4", "--out", str(out)])
    assert code == 0
    with open(out / "forgetting_table.csv", encoding="utf-8") as handle:
        rows = {row["arm"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"finetune", "replay", "replay_ewc"}
    assert rows["finetune"]["samples_replayed"] == "0" and int(rows["replay"]["samples_replayed"]) > 0
    assert rows["finetune"]["samples_trained_total"] == "64"  # 2 phases x 4 updates x 8
    assert abs(int(rows["replay"]["samples_trained_total"]) - 64) <= 2 * 8  # within a batch per phase
    assert int(rows["replay"]["samples_new"]) + int(rows["replay"]["samples_replayed"]) == \
        int(rows["replay"]["samples_trained_total"])
    assert (out / "forgetting.png").stat().st_size > 0
    with open(out / "forgetting.csv", encoding="utf-8") as handle:
        points = list(csv.DictReader(handle))
    assert {point["phase"] for point in points} == {"", "reviews", "tweets"}  # "": the untrained model


def test_bench_forgetting_needs_a_set_per_phase(tmp_path, capsys):
    assert main(["bench", "forgetting", "configs/forgetting.yaml", "eval.sets=[]", "--out", str(tmp_path)]) == 2
    assert "eval.sets naming an evaluation set for each phase" in capsys.readouterr().err
