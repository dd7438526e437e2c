"""`ol-ray bench time-to-accuracy`: the arms' configs, the table from hand-made curves, and a smoke run of every
arm on the tiny model."""

import math

import pytest

from ol_ray.bench.harness import read_csv
from ol_ray.bench.time_to_accuracy import arm_config, first_reach, summarise
from ol_ray.cli import main
from ol_ray.config import load_config

from data_files import write_sst2_tsv


def test_each_arm_runs_its_own_config():
    cfg = load_config("configs/sst2.yaml")
    finetune = arm_config(cfg, "finetune", 1, 6400, 800, 32, 5e-5)
    assert (finetune.selection.strategy, finetune.selection.pool_size, finetune.batching.batch_size) == ("random", 32,
                                                                                                        32)
    assert finetune.learner.lr == 5e-5 and finetune.learner.decay_updates == 0 and finetune.eval.every_updates == 25
    assert finetune.stream.max_samples == 6400 and finetune.stream.shuffle_seed == 1 and finetune.model.seed == 1
    randomly = arm_config(cfg, "pipeline_random", 0, 6400, 800, 32, 5e-5)
    assert randomly.selection.strategy == "random" and randomly.selection.pool_size == cfg.batching.batch_size
    assert randomly.learner == cfg.learner and randomly.stream.max_samples == 6400
    default = arm_config(cfg, "pipeline", 0, 6400, 800, 32, 5e-5)
    assert default.selection == cfg.selection and default.stream.max_samples == cfg.stream.max_samples
    assert default.eval.every_updates == 800 // cfg.batching.batch_size


def test_targets_are_reached_at_the_first_evaluation_above_them_and_compared_seed_by_seed():
    def curve(*points):
        return [{"samples_trained": s, "wall_s": w, "dev_accuracy": a} for s, w, a in points]

    curves = {("finetune", 0): curve((0, 0.0, 0.5), (800, 40.0, 0.81), (1600, 80.0, 0.84)),
              ("finetune", 1): curve((0, 0.0, 0.5), (800, 50.0, 0.79), (1600, 100.0, 0.82)),
              ("pipeline", 0): curve((0, 0.0, 0.5), (400, 10.0, 0.82), (800, 20.0, 0.86)),
              ("pipeline", 1): curve((0, 0.0, 0.5), (400, 12.5, 0.80), (800, 25.0, 0.85))}
    assert first_reach(curves[("finetune", 0)], 0.83) == (80.0, 1600.0)
    assert all(math.isnan(x) for x in first_reach(curves[("finetune", 1)], 0.83))
    rows = {(r["target"], r["arm"]): r for r in summarise(curves, [0.80, 0.83])}
    assert rows[(0.80, "finetune")]["reached"] == "2/2" and rows[(0.80, "finetune")]["wall_s"] == 70.0
    assert rows[(0.80, "pipeline")]["wall_s_vs_finetune"] == pytest.approx((10 + 12.5) / (40 + 100))
    assert rows[(0.83, "pipeline")]["samples_vs_finetune"] == pytest.approx(800 / 1600)  # seed 0 only: both reached
    assert rows[(0.83, "finetune")]["reached"] == "1/2"


def test_bench_time_to_accuracy_runs_every_arm_on_the_tiny_model(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_sst2_tsv(train, sst2_rows[:300])
    write_sst2_tsv(dev, sst2_rows[-100:])
    out = tmp_path / "bench"
    code = main(["bench", "time-to-accuracy", "configs/sst2.yaml", f"stream.path={train}", f"eval.path={dev}",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.lr=3e-3",
                 "learner.torch_threads=1", "learner.num_cpus=0.5", "stream.max_samples=128", "stream.window_size=64",
                 "--seeds", "0", "--samples", "64", "--eval-every", "32", "--finetune-lr", "3e-3",
                 "--targets", "0.5", "0.99", "--out", str(out)])
    assert code == 0
    evals = read_csv(str(out / "time_to_accuracy.csv"))
    assert {r["arm"] for r in evals} == {"finetune", "pipeline_random", "pipeline"}
    assert max(r["samples_trained"] for r in evals if r["arm"] == "finetune") == 64
    table = read_csv(str(out / "time_to_accuracy_table.csv"))
    assert len(table) == 2 * 3 and all(r["reached"] == "0/1" for r in table if r["target"] == 0.99)
    assert (out / "time_to_accuracy.png").stat().st_size > 5_000
