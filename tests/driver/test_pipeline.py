"""The whole pipeline under a local Ray with 2 CPUs, on a few hundred real SST-2 rows with bad rows mixed in; and
variants: rho_loss, batch policies, a causal LM, a two-phase stream with replay and EWC."""

import csv
import json
import os
import random

import numpy as np
import pytest

from ol_ray.config import load_config
from ol_ray.driver.outputs import RunOutputs, kept_records
from ol_ray.driver.pipeline import fresh_start, run_pipeline
from ol_ray.observe.report import write_report

from conftest import AIRLINE_TWEETS, no_actors_left, read_tsv, real_data
from data_files import write_sst2_tsv

BAD_ROWS = [
    b"a row with no label field\n",
    b"too\tmany\tfields\t1\n",
    b"label out of range \t7\n",
    b"   \t1\n",
    b"invalid \xff\xfe utf-8 \t0\n",
]


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory, sst2_rows):
    path = tmp_path_factory.mktemp("stream") / "train.tsv"
    with open(path, "wb") as handle:
        handle.write(b"sentence\tlabel\n")
        for i, (text, label) in enumerate(sst2_rows[:400]):
            handle.write(f"{text}\t{label}\n".encode())
            if i % 80 == 40:
                handle.write(BAD_ROWS[i // 80])
    return str(path)


@pytest.fixture(scope="module")
def dev_file(tmp_path_factory, sst2_rows):
    path = tmp_path_factory.mktemp("dev") / "dev.tsv"
    write_sst2_tsv(path, sst2_rows[-300:])
    return str(path)


@pytest.fixture(scope="module")
def mlruns(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tracking") / "mlruns")


@pytest.fixture(scope="module")
def run(ray_local, stream_file, dev_file, tiny_model_dir, tmp_path_factory, mlruns):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [
        f"stream.path={stream_file}", "stream.text_field=sentence", "stream.window_size=203",
        f"model.name_or_path={tiny_model_dir}", "model.max_length=32",
        "scoring.batch_size=32", "scoring.num_cpus=0.5",
        "selection.strategy=entropy", "selection.pool_size=24", "batching.batch_size=16",
        "learner.lr=3e-3", "learner.torch_threads=1", "learner.num_cpus=0.5", "learner.publish_every=2",
        f"eval.path={dev_file}", "eval.every_updates=10",
        "checkpoint.every_updates=8", f"output.run_dir={run_dir}", "output.progress=false",
        "output.tensorboard=true", f"output.mlflow_tracking_uri={mlruns}", "output.mlflow_experiment=tests"])
    return run_pipeline(cfg), str(run_dir)


def test_a_finished_run_leaves_no_actor_behind(run):
    assert no_actors_left() == []


def test_every_sample_read_is_accounted_for(run, sst2_rows):
    summary, run_dir = run
    assert summary["samples_read"] == 405
    assert summary["samples_quarantined"] == 5
    assert summary["samples_trained"] + summary["samples_not_selected"] + summary["samples_quarantined"] == 405
    assert summary["accounting_ok"]
    assert summary["samples_not_selected"] > 0  # pools of 24, batches of 16
    assert sum(summary["labels_received"]) == 400 and sum(summary["labels_trained"]) == summary["samples_trained"]
    assert summary["labels_received"][1] == sum(int(label) for _, label in sst2_rows[:400])
    reasons = [json.loads(line)["code"] for line in open(os.path.join(run_dir, "quarantine.jsonl"))]
    assert sorted(reasons) == sorted(["field_count", "field_count", "label_out_of_range", "empty_text",
                                      "undecodable"])


def test_weights_were_published_and_pulled(run):
    summary, _ = run
    assert summary["weight_publishes"] >= 2
    assert summary["weight_pulls"] >= 2  # the starting weights, then at least one newer version
    assert summary["score_version_max"] > 0  # some trained samples were scored by updated weights
    assert summary["staleness_max"] > 0  # and staleness was measured against the learner's version


def test_scorers_started_once_and_staleness_stayed_within_its_bound(run):
    summary, run_dir = run
    assert summary["windows"] == 2 and summary["scorers"] == 1
    assert summary["scorer_starts"] == 1  # one scoring execution for the whole run, across windows and checkpoints
    assert summary["staleness_bound"] == 2 + 2 - 1  # max_lead_updates + publish_every - 1
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    updates = [r for r in records if r["kind"] == "update"]
    assert max(r["staleness_max"] for r in updates) == summary["staleness_max"] <= summary["staleness_bound"]
    assert summary["prequential_source"] == "scores" and summary["scored"]


def test_loss_fell_and_outputs_were_written(run):
    summary, run_dir = run
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    evals = [r for r in records if r["kind"] == "eval"]
    updates = [r for r in records if r["kind"] == "update"]
    assert evals[0]["update"] == 0 and evals[-1]["update"] == summary["updates"]
    assert evals[-1]["dev_loss"] < evals[0]["dev_loss"]
    assert len(updates) == summary["updates"] and all(r["batch_size"] == 16 for r in updates[:-1])
    assert {"loss", "lr", "weight_version", "staleness_mean", "samples_per_s", "samples_read"} <= set(updates[0])
    assert os.path.isfile(os.path.join(summary["checkpoint"], "model", "config.json"))
    assert os.path.getsize(os.path.join(run_dir, "monitor.jsonl")) > 0
    with open(os.path.join(run_dir, "summary.json")) as handle:
        assert json.load(handle)["accounting_ok"]


@pytest.mark.parametrize("override, message", [
    ("stream.path={tmp}/none.tsv", "does not exist"),
    ("eval.path={tmp}/none.tsv", "eval.path"),
    ("model.name_or_path={tmp}/no-model", "model.name_or_path"),
])
def test_missing_inputs_fail_before_any_run_starts(tiny_model_dir, stream_file, tmp_path, override, message):
    cfg = load_config(None, [f"stream.path={stream_file}", f"model.name_or_path={tiny_model_dir}",
                             f"output.run_dir={tmp_path / 'run'}", override.format(tmp=tmp_path)])
    with pytest.raises(Exception, match=message):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()


def test_a_dev_set_without_the_configured_fields_fails_before_ray_starts(tiny_model_dir, stream_file, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("review\tlabel\n" + "".join(f"fine film {i}\t1\n" for i in range(300)))
    cfg = load_config(None, [f"stream.path={stream_file}", "stream.text_field=sentence", f"eval.path={dev}",
                             f"model.name_or_path={tiny_model_dir}", f"output.run_dir={tmp_path / 'run'}"])
    with pytest.raises(Exception, match=r"dev.tsv has no valid rows \(256 rejected; the first: missing_text: .*"
                                        r"text_field='sentence'"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_leaves_no_actor_behind(ray_local, tiny_model_dir, stream_file, tmp_path):
    """The learner cannot be placed (a GPU this Ray lacks; on a Ray the run joined that is a wait, not an error):
    the run fails after learner.start_timeout_s and ends the scorers and small actors it started."""
    from ol_ray.driver.feeding import PipelineError

    cfg = load_config(None, [f"stream.path={stream_file}", "stream.text_field=sentence", "eval.path=",
                             f"model.name_or_path={tiny_model_dir}", "learner.num_gpus=1", "learner.start_timeout_s=3",
                             "scoring.num_cpus=0.5", f"output.run_dir={tmp_path / 'run'}", "output.progress=false"])
    with pytest.raises(PipelineError, match="did not start within 3 s"):
        run_pipeline(cfg)
    assert no_actors_left() == []


def test_a_used_run_directory_is_not_overwritten(run, stream_file, tiny_model_dir):
    summary, run_dir = run
    cfg = load_config(None, [f"stream.path={stream_file}", f"model.name_or_path={tiny_model_dir}",
                             f"output.run_dir={run_dir}"])
    with pytest.raises(Exception, match="--resume"):
        run_pipeline(cfg)


def test_rho_loss_holds_out_the_stream_head_and_scores_the_irreducible_loss(ray_local, stream_file, tiny_model_dir,
                                                                             tmp_path):
    from ol_ray.state.ledger import LEDGER_LOG

    run_dir = tmp_path / "rho"
    cfg = load_config(None, [
        f"stream.path={stream_file}", "stream.text_field=sentence", "stream.window_size=400",
        f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "scoring.batch_size=32",
        "scoring.num_cpus=0.5", "selection.strategy=rho_loss", "selection.mode=soft", "selection.holdout_size=60",
        "selection.irreducible_epochs=1", "selection.pool_size=32", "batching.batch_size=8", "learner.lr=3e-3",
        "learner.torch_threads=1", "learner.num_cpus=0.5", "eval.path=", f"output.run_dir={run_dir}",
        "output.progress=false"])
    summary = run_pipeline(cfg)
    assert summary["samples_holdout"] == 60 and summary["samples_read"] == 405 - 60
    assert summary["samples_quarantined"] == 4  # the first bad row was in the holdout, and left out of it
    assert summary["accounting_ok"]
    assert summary["samples_trained"] + summary["samples_not_selected"] + summary["samples_quarantined"] == 345
    holdout = json.load(open(run_dir / "irreducible" / "holdout.json"))
    assert holdout["read"] == 60 and holdout["rejected"] == 1 and holdout["samples"] == 59
    trained = {i for line in open(run_dir / LEDGER_LOG) for i in json.loads(line).get("trained", [])}
    rows = {int(sample_id.rsplit(":", 1)[1]) for sample_id in trained}
    assert trained and min(rows) > 60  # nothing of the holdout was trained on


def test_batch_policies_run_in_the_pipeline_from_config(ray_local, stream_file, tiny_model_dir, tmp_path):
    """Every policy but fixed (the main run's), composed: a periodic update, capped by adaptive, resource and
    uncertainty, with learning-rate scaling and gradient accumulation in passes of at most 4 samples; and the model
    trained through LoRA adapters, which are all that is published to the scorer."""
    policy = ["batching.policy=min_of", "batching.policies=[periodic, adaptive, resource, uncertainty]",
              "batching.period_s=0.3", "batching.cooldown_updates=2", "batching.lr_scaling=sqrt",
              "learner.micro_batch_size=4"]
    cfg = load_config(None, [
        f"stream.path={stream_file}", "stream.text_field=sentence", "stream.window_size=500",
        f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "scoring.batch_size=32",
        "scoring.num_cpus=0.5", "selection.pool_size=24", "batching.batch_size=16", "batching.min_batch_size=4",
        "batching.max_batch_size=32", "learner.torch_threads=1", "learner.num_cpus=0.5", "output.monitor_every_s=0.5",
        f"output.run_dir={tmp_path / 'run'}", "output.progress=false", "model.lora_r=4",
        "model.lora_targets=[query, value]", *policy])
    summary = run_pipeline(cfg)
    assert summary["accounting_ok"] and summary["samples_trained"] > 0
    assert summary["weight_pulls"] >= 1 and 0 < summary["weight_bytes_per_publish"] < 0.05 * 4 * summary[
        "model_parameters"]  # adapters and head only
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    updates = [r for r in records if r["kind"] == "update"]
    assert all(4 <= r["batch_size"] <= 32 for r in updates[:-1])  # the last one takes the leftovers
    assert sum(r["batch_size"] for r in updates) == summary["samples_trained"]
    monitor = [r for r in records if r["kind"] == "monitor"]
    assert monitor and "learner_step_s" in monitor[-1] and "gpus" not in monitor[-1]  # absent on CPU, not zero
    assert all(r["micro_batches"] >= r["batch_size"] / 4 for r in updates)  # accumulation: passes of <= 4 samples
    assert all(r["memory_per_sample_mb"] > 0 for r in updates)
    assert all("noise_small_sq" in r for r in updates if r["batch_size"] >= 2)


def lm_rows(count, seed):
    """Texts of three sentences of the little language, with prompt/response and chat rows among them."""
    from tiny_model import LM_SENTENCES

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        pick = [rng.choice(LM_SENTENCES) for _ in range(3)]
        if i % 5 == 1:
            rows.append({"prompt": pick[0], "response": pick[1]})
        elif i % 5 == 3:
            rows.append({"messages": [{"role": "user", "content": pick[0]}, {"role": "assistant", "content": pick[1]}]})
        else:
            rows.append({"text": " ".join(pick)})
    return rows


def test_a_causal_lm_pipeline_lowers_held_out_perplexity(ray_local, tiny_gpt2_dir, tmp_path):
    """A causal LM trained by a sharded learner of 2 ranks (FSDP, GPT-2's tied embeddings in the root unit; the
    single learner trains one in tests/serve/test_app.py): prompt/response and chat rows, bad rows quarantined, the
    held-out perplexity lowered."""
    from ol_ray.observe.report import write_report

    stream, dev = tmp_path / "stream.jsonl", tmp_path / "dev.jsonl"
    bad = ['{"messages": [{"role": "user", "content": "no answer"}]}', '{"prompt": "no response"}',
           '{"text": "cat"}']  # one token: nothing to predict, rejected at tokenization
    stream.write_text("".join(json.dumps(row) + "\n" for row in lm_rows(160, seed=0)) + "\n".join(bad) + "\n")
    dev.write_text("".join(json.dumps(row) + "\n" for row in lm_rows(60, seed=1)))
    cfg = load_config(None, [
        f"stream.path={stream}", "stream.window_size=82", f"model.name_or_path={tiny_gpt2_dir}",
        "model.kind=causal_lm", "model.max_length=48", "scoring.batch_size=32", "selection.strategy=entropy",
        "selection.pool_size=20", "batching.batch_size=10", "learner.lr=1e-2", "learner.torch_threads=1",
        "learner.num_cpus=0.5", "learner.publish_every=2", f"eval.path={dev}", "eval.every_updates=100",
        f"output.run_dir={tmp_path / 'run'}", "output.progress=false", "learner.num_workers=2",
        "learner.sharding=fsdp"])
    summary = run_pipeline(cfg)
    assert summary["accounting_ok"] and summary["samples_read"] == 163 and summary["samples_quarantined"] == 3
    assert summary["learner_ranks"] == 2
    with open(tmp_path / "run" / "quarantine.jsonl", encoding="utf-8") as handle:
        codes = sorted(json.loads(line)["code"] for line in handle)
    assert codes == ["bad_messages", "missing_text", "no_targets"]
    assert summary["labels_received"] == [] and summary["score_version_max"] > 0  # scored by published versions
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[-1]["dev_perplexity"] < 0.6 * evals[0]["dev_perplexity"]
    assert summary["dev_perplexity"] == evals[-1]["dev_perplexity"] and summary["dev_accuracy"] is None
    assert all(r["target_tokens"] > 0 for r in records if r["kind"] == "update")
    write_report(str(tmp_path / "run"))
    assert (tmp_path / "run" / "report" / "perplexity.png").exists()


def two_phase_files(folder, sst2_rows):
    reviews = write_sst2_tsv(folder / "reviews.tsv", sst2_rows[:120])
    reviews_dev = write_sst2_tsv(folder / "reviews_dev.tsv", sst2_rows[-60:])
    tweets = [row for row in read_tsv(real_data(AIRLINE_TWEETS), 180)]
    tweets_file = write_sst2_tsv(folder / "train.tsv", tweets[:120])  # another file named like SST-2's train.tsv
    tweets_dev = write_sst2_tsv(folder / "tweets_dev.tsv", tweets[120:180])
    return reviews, reviews_dev, tweets_file, tweets_dev


def test_a_two_phase_stream_writes_the_accuracy_matrix(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    reviews, reviews_dev, tweets, tweets_dev = two_phase_files(tmp_path, sst2_rows)
    run_dir = tmp_path / "run"
    cfg = load_config(None, [
        f"stream.phases=[{{name: reviews, path: {reviews}}}, {{name: tweets, path: {tweets}, max_samples: 100}}]",
        "stream.text_field=sentence", "stream.window_size=128", f"model.name_or_path={tiny_model_dir}",
        "model.max_length=32", "scoring.batch_size=32", "selection.pool_size=16", "batching.batch_size=16",
        "learner.lr=3e-3", "learner.torch_threads=1", "learner.num_cpus=0.5", "learner.publish_every=2",
        f"eval.sets=[{{name: reviews, path: {reviews_dev}}}, {{name: tweets, path: {tweets_dev}}}]",
        "eval.every_updates=4", "continual.replay_size=32", "continual.ewc_lambda=1", "continual.ewc_samples=8",
        "continual.ewc_every_updates=0", "checkpoint.every_updates=0", f"output.run_dir={run_dir}",
        "output.progress=false"])
    summary = run_pipeline(cfg)
    assert summary["samples_read"] == 220 and summary["accounting_ok"]  # ids carry the phase: no clash
    assert [phase["name"] for phase in summary["phases"]] == ["reviews", "tweets"]
    assert summary["phases"][1]["start_received"] == 120  # the tweets began after every review
    matrix = summary["task_matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 and all(0 <= a <= 1 for a in row) for row in matrix)
    metrics = summary["continual_metrics"]
    assert metrics["backward_transfer"] == pytest.approx(matrix[1][0] - matrix[0][0])
    assert metrics["forward_transfer"] is not None and metrics["average_accuracy"] == pytest.approx(np.mean(matrix[1]))
    assert summary["samples_replayed"] > 0 and summary["prequential_accuracy"] is not None
    assert 0 <= summary["phases"][0]["prequential_balanced_accuracy"] <= 1
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    assert [r["phase"] for r in records if r["kind"] == "phase"] == ["reviews", "tweets"]
    assert [r["reason"] for r in records if r["kind"] == "ewc_refresh"] == ["phase"]
    with open(run_dir / "accuracy_matrix.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["update"] == "0" and {"reviews", "tweets", "reviews_balanced"} <= set(rows[0])
    assert len(rows) == len(summary["accuracy_history"]) >= 3
    with open(write_report(str(run_dir)), encoding="utf-8") as handle:
        report = handle.read()
    assert "## Continual learning" in report and "backward_transfer" in report
    assert (run_dir / "report" / "continual.png").stat().st_size > 0


def test_a_resume_keeps_metrics_up_to_the_checkpoint_it_restored():
    lines = [{"kind": "update", "update": 4}, {"kind": "checkpoint", "update": 4, "path": "ckpt/step-4"},
             {"kind": "phase", "update": 4, "phase": "tweets"}, {"kind": "eval", "update": 4},
             {"kind": "update", "update": 5}]
    assert kept_records(lines, {"restored_from": "ckpt/step-4", "updates": 4}) == lines[:2]  # the phase comes again
    assert kept_records(lines, {"restored_from": None, "updates": 0}) == []  # no checkpoint: the learner starts over


def test_a_run_directory_with_records_but_no_checkpoint_starts_over(tmp_path):
    """A crash in the first window, then the same command again: the fresh start rewinds the records it finds (the
    old start evaluation and window records go; the learner writes them again) instead of failing."""
    cfg = load_config(None, ["stream.path=unused", f"output.run_dir={tmp_path}"])
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "update": 0}) + "\n"
                                            + json.dumps({"kind": "update", "update": 1}) + "\n")
    outputs = RunOutputs(str(tmp_path), None, progress=False)
    outputs.rewind(fresh_start(cfg, str(tmp_path)))
    outputs.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["update"], r["restored_from"]) for r in records] == [("resume", 0, None)]


def test_lockstep_pipeline_trains_exactly_what_the_plain_loop_trains(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    """max_lead_updates 0 and a publish every update: each pool is scored with the weights of the update just
    made, so the pipeline's picks and losses equal the single-process loop's (bench_loop.run_plain) update by
    update, on the same stream, seed and config."""
    from ol_ray.bench.loop import read_stream, run_plain
    from ol_ray.state.ledger import LEDGER_LOG

    stream = write_sst2_tsv(tmp_path / "train.tsv", sst2_rows[:192])
    cfg = load_config(None, [
        f"stream.path={stream}", "stream.text_field=sentence", "stream.window_size=96",
        f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "scoring.batch_size=32",
        "scoring.max_lead_updates=0", "selection.strategy=entropy", "selection.pool_size=24",
        "batching.batch_size=8", "learner.lr=3e-3", "learner.torch_threads=1", "learner.num_cpus=0.5",
        "learner.publish_every=1", "eval.path=", "continual.drift_detector=none",
        f"output.run_dir={tmp_path / 'run'}", "output.progress=false"])
    summary = run_pipeline(cfg)
    assert summary["updates"] == 8 and summary["staleness_max"] == 0 == summary["staleness_bound"]
    (tmp_path / "plain").mkdir()
    _, plain_updates = run_plain(cfg, read_stream(cfg, 192, 0.0, 0), chunk=24, run_dir=str(tmp_path / "plain"))

    def trained(folder):
        with open(folder / LEDGER_LOG, encoding="utf-8") as handle:
            return [json.loads(line)["trained"] for line in handle]

    assert trained(tmp_path / "run") == trained(tmp_path / "plain")  # the same picks, update by update
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as handle:
        piped_updates = [r for r in map(json.loads, handle) if r["kind"] == "update"]
    assert [r["loss"] for r in piped_updates] == pytest.approx([r["loss"] for r in plain_updates], rel=1e-5)


def test_the_run_is_tracked_in_tensorboard_and_mlflow(run, mlruns):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary, run_dir = run
    updates = summary.updates
    events = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/batch_size", "train/staleness_mean", "train/samples_per_s", "dev/accuracy",
            "selection/label_0_share", "train/prequential_accuracy"} <= tags
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, updates + 1))
    assert events.Scalars("dev/accuracy")[-1].value == pytest.approx(summary["dev_accuracy"])

    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(mlruns)
    found = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    logged = found[0].data
    assert logged.params["selection.strategy"] == "entropy" and logged.params["batching.batch_size"] == "16"
    assert logged.metrics["dev/accuracy"] == pytest.approx(summary["dev_accuracy"])
    client = mlflow.MlflowClient(mlruns)
    assert len(client.get_metric_history(found[0].info.run_id, "train/loss")) == updates
    artifacts = {item.path for item in client.list_artifacts(found[0].info.run_id)}
    assert {"summary.json", "config.yaml", "report.md", "report"} <= artifacts


def test_the_runs_counters_are_scraped_from_rays_prometheus_endpoint(run, ray_local):
    """Last in the module, so Ray's metrics agent (which reports every few seconds) has long had the run's counts."""
    import time
    import urllib.request

    wanted = ("ray_ol_ray_samples_trained", "ray_ol_ray_updates", "ray_ol_ray_samples_scored", "ray_ol_ray_staleness")
    deadline, found = time.monotonic() + 30, {}
    while time.monotonic() < deadline and len(found) < len(wanted):
        text = urllib.request.urlopen(f"http://127.0.0.1:{ray_local.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            name = line.split("{")[0].removesuffix("_total")  # counters carry the OpenMetrics suffix
            if name in wanted and not line.startswith("#"):
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        time.sleep(1 if len(found) < len(wanted) else 0)
    assert set(found) == set(wanted), found
    assert found["ray_ol_ray_updates"] >= run[0].updates and found["ray_ol_ray_samples_trained"] > 0
