"""`ol-ray bench serve`: its latency and freshness figures from what clients saw, its resource check, and a smoke run
of the whole benchmark on a tiny model (both servers, a live run fed from a feedback log, real HTTP)."""

import json
import math

import pytest

from ol_ray.bench.harness import read_csv
from ol_ray.bench.serving import check_room, freshness, latency_figures
from ol_ray.cli import main
from ol_ray.config import ConfigError, load_config

from conftest import free_port
from data_files import write_sst2_tsv


def test_latency_figures_leave_failures_out_of_the_rate_and_the_percentiles():
    answers = [(0.0, 0.010, 200, 1)] * 98 + [(0.0, 0.100, 200, 1), (0.0, 5.0, 0, -1)]
    figures = latency_figures(answers, seconds=2.0)
    assert figures["requests"] == 100 and figures["failed"] == 1
    assert figures["requests_per_s"] == pytest.approx(99 / 2.0)
    assert figures["p50_ms"] == pytest.approx(10.0) and 10.0 < figures["p99_ms"] <= 100.0
    assert math.isnan(latency_figures([(0.0, 1.0, 503, -1)], 1.0)["p50_ms"])


def test_freshness_is_publish_to_first_answer_of_each_version_published_during_the_servers_rounds():
    published = {1: 5.0, 2: 10.0, 3: 11.0, 4: 12.0, 5: 14.0, 6: 21.0}  # 1 before the round, 5 between rounds
    windows = [(9.0, 13.0), (20.0, 22.0)]  # the ol_ray server's rounds
    answered = [(12.9, 4), (10.5, 2), (10.2, 1), (12.8, 2), (12.5, 4), (20.5, 5), (21.5, 5)]  # as clients finish
    figures = freshness(published, answered, windows)
    assert figures["versions_published"] == 4 and figures["versions_answered"] == 2  # 3 superseded, 6 never pulled
    assert figures["freshness_p50_s"] == pytest.approx(0.5) and figures["freshness_max_s"] == 0.5
    assert math.isnan(freshness(published, [], windows)["freshness_p50_s"])


def test_the_learner_scorers_and_both_servers_must_fit_on_the_cluster():
    cfg = load_config("configs/sst2.yaml")  # learner 1 CPU, a scorer 0.5, two servers 0.5 each: 2.5
    with pytest.raises(ConfigError, match="need 2.5 CPUs and Ray has 2"):
        check_room(cfg, 2.0)
    check_room(load_config("configs/sst2.yaml", ["learner.num_cpus=0.5"]), 2.0)


def test_bench_serve_runs_a_tiny_model_against_the_bare_deployment(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    from ray import serve

    train = tmp_path / "train.tsv"
    write_sst2_tsv(train, sst2_rows[:300])
    out = tmp_path / "bench"
    code = main(["bench", "serve", "configs/sst2.yaml", f"stream.path={train}", "eval.path=",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "learner.num_cpus=0.5",
                 "learner.precision=fp32", "scoring.precision=fp32", "stream.max_window_wait_s=0.5",
                 "selection.pool_size=16", "batching.batch_size=8", "ray.include_dashboard=false",
                 "ray.object_store_mb=300", f"serve.port={free_port()}", "serve.refresh_every_s=0.2",
                 "--clients", "2", "--seconds", "1", "--rounds", "2", "--feed-rate", "40", "--samples", "300",
                 "--out", str(out)])
    serve.shutdown()  # on a Ray it did not start, the benchmark deletes only its applications
    assert code == 0
    rows = read_csv(str(out / "serve.csv"))
    assert [(row["clients"], row["server"]) for row in rows] == [(2, "ol_ray"), (2, "bare")]
    for row in rows:
        assert row["failed"] == 0 and row["requests"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert all(row["throughput_ratio"] > 0 for row in rows if row["server"] == "ol_ray")
    fresh = json.loads((out / "freshness.json").read_text())
    assert fresh["run_alive_throughout"] and fresh["updates"] > 0
    assert fresh["versions_answered"] >= 1 and fresh["freshness_p50_s"] >= 0  # the server followed the run
