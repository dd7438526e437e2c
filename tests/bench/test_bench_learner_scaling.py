"""`ol-ray bench learner-scaling`: its candidate pools and config, and a smoke run of the command (2 ranks on the
tiny model, and the bare Hugging Face step) on the suite's Ray."""

import os

import numpy as np

from ol_ray.bench.harness import read_csv
from ol_ray.bench.learner_scaling import bench_config, learner_scaling, pools
from ol_ray.config import load_config
from ol_ray.learner.irreducible import Holdout

from conftest import ROOT, no_actors_left
from data_files import write_sst2_tsv


def test_pools_give_every_row_an_id_of_its_own_and_reuse_rows_in_turn():
    head = Holdout([np.arange(i + 2) for i in range(5)], np.array([0, 1, 0, 1, 1]), None, 5, 0, None, None)
    made = pools(head, 4, 3, "r2")
    assert [len(p["label"]) for p in made] == [4, 4, 4]
    assert len({i for p in made for i in p["sample_id"]}) == 12  # no id repeats: the ledger would reject it
    assert [len(ids) for ids in made[1]["input_ids"]] == [6, 2, 3, 4]  # rows 4, 0, 1, 2: the head in turn


def test_the_bench_config_feeds_one_batch_a_call_and_evaluates_nothing():
    cfg = bench_config(load_config(None, ["stream.path=x.tsv", "selection.strategy=entropy",
                                          "batching.policy=adaptive"]), 2, "/tmp/run")
    assert (cfg.selection.strategy, cfg.selection.pool_size, cfg.batching.policy) == ("random", 32, "fixed")
    assert cfg.learner.num_workers == 2 and cfg.eval.path == "" and cfg.checkpoint.every_updates == 0


def test_bench_learner_scaling_runs_two_ranks_and_the_bare_step(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    data = write_sst2_tsv(tmp_path / "train.tsv", sst2_rows[:100])
    out = tmp_path / "bench"
    cfg = load_config(os.path.join(ROOT, "configs", "sst2.yaml"), [
        f"stream.path={data}", f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "batching.batch_size=8",
        "learner.num_cpus=0.5", "learner.precision=fp32", "scoring.precision=fp32"])
    learner_scaling(cfg, workers=(2,), updates=3, warmup=1, out_dir=str(out))  # on the suite's Ray, left running
    rows = read_csv(out / "learner_scaling.csv")
    assert [row["ranks"] for row in rows] == [2, "bare HF step"]
    assert rows[0]["updates"] == 3 and rows[0]["samples_per_s"] > 0 and np.isfinite(rows[0]["loss_last"])
    assert rows[1]["step_samples_per_s"] > 0 and rows[0]["step_vs_bare"] > 0
    assert no_actors_left() == [] and "| ranks |" in (out / "learner_scaling.md").read_text()
