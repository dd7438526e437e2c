"""Faults injected into real runs: every test ends with a finished run whose ledger balances.

Learner actor killed twice, a scorer process killed, a corpus of every kind of bad input in a followed folder, and a
whole job killed and resumed from a checkpoint whose newest copy was corrupted (the chaos test).
"""

import json
import os
import signal
import threading
import time

import yaml

from ol_ray.config import load_config
from ol_ray.driver.pipeline import run_pipeline

from conftest import no_actors_left


def records(run_dir, name="metrics.jsonl"):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.endswith("}\n")]


def wait_for(condition, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scorer_pid(ray_module):
    """The process of a live scorer actor, from Ray's actor table."""
    return next((actor["Pid"] for actor in ray_module._private.state.actors().values()
                 if actor["ActorClassName"] == "Scorer" and actor["State"] == "ALIVE"), None)


def in_thread(function, *args, **kwargs):
    """Run `function` in a thread; returns (thread, box) where box gets "result" or "error"."""
    box = {}

    def target():
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the test
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def result_of(thread, box, timeout=300):
    thread.join(timeout)
    assert not thread.is_alive(), "the run did not finish"
    if "error" in box:
        raise box["error"]
    return box["result"]


def assert_balanced(summary, rows):
    ledger = summary["ledger"]
    assert summary["accounting_ok"], ledger
    assert summary["samples_read"] == ledger["read"] == rows
    assert ledger["read"] == ledger["quarantined"] + ledger["not_selected"] + ledger["trained"] + ledger["nonfinite"]
    assert ledger["unresolved"] == 0


def write_stream(path, rows, ids=False):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(("id\t" if ids else "") + "sentence\tlabel\n")
        for i, (text, label) in enumerate(rows):
            handle.write((f"g{i}\t" if ids else "") + f"{text}\t{label}\n")
    return str(path)


def small_config(tiny_model_dir, stream, run_dir, *overrides):
    return load_config(None, [
        f"stream.path={stream}", "stream.text_field=sentence", "stream.window_size=150", "stream.rate=200",
        f"model.name_or_path={tiny_model_dir}", "model.max_length=32",
        "scoring.batch_size=25", "scoring.num_cpus=0.5", "selection.pool_size=20", "batching.batch_size=10",
        "learner.lr=3e-3", "learner.torch_threads=1", "learner.num_cpus=0.5", "learner.publish_every=2",
        "checkpoint.every_updates=3", "checkpoint.keep=3", f"output.run_dir={run_dir}", "output.progress=false",
        *overrides])


def test_chaos_every_part_killed_once_in_one_run(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    """A seeded fault schedule in one run: the learner twice, a scorer, the weight store, the monitor, the
    quarantine sink and the driver (then `--resume` with an override, its newest checkpoint corrupted first). The
    run finishes, every sample read is accounted for, none lost, and each rollback retrains at most what followed
    its checkpoint."""
    from ol_ray.bench.faults import FAULTS, run_with_faults, schedule

    rows = 1200
    stream = write_stream(tmp_path / "train.tsv", sst2_rows[:rows])
    run_dir = str(tmp_path / "run")
    overrides = [f"stream.path={stream}", "stream.text_field=sentence", "stream.window_size=200", "stream.rate=100",
                 f"model.name_or_path={tiny_model_dir}", "model.max_length=32", "scoring.batch_size=25",
                 "scoring.num_cpus=0.25", "selection.pool_size=20", "batching.batch_size=10", "learner.lr=3e-3",
                 "learner.torch_threads=1", "learner.num_cpus=0.25", "learner.publish_every=2", "eval.path=",
                 "checkpoint.every_updates=3", "checkpoint.keep=3"]
    faults = schedule(seed=0, updates=rows // 20, faults=FAULTS)
    newest = {}

    def corrupt_the_newest_checkpoint(run_dir):  # the killed driver's newest checkpoint: the one before stands in
        names = sorted(d for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.startswith("step-"))
        newest.update(corrupt=names[-1], before=names[-2])
        with open(os.path.join(run_dir, "checkpoints", names[-1], "model", "model.safetensors"), "r+b") as handle:
            handle.truncate(64)

    summary, events = run_with_faults(None, overrides, run_dir, faults, ray_local.get_runtime_context().gcs_address,
                                      timeout_s=400, resume_overrides=["checkpoint.keep=4"],
                                      before_resume=corrupt_the_newest_checkpoint)
    assert [e.target for e in events] == [f.target for f in faults] and sorted(FAULTS) == sorted(e.target
                                                                                                 for e in events)
    assert all(e.recovered_s is not None for e in events), events
    assert_balanced(summary, rows)
    rollbacks = [e for e in events if e.target in ("learner", "driver")]
    assert all(e.updates_undone >= 0 for e in rollbacks)
    assert all(e.updates_undone == 0 for e in events if e not in rollbacks)
    # each rollback retrains at most what followed its checkpoint: checkpoints come at window ends (200 rows, 100 of
    # them trained), and what the learner made past its last reported update is undone too
    window_trained = 200 * 10 // 20
    assert summary["samples_trained_twice"] <= len(rollbacks) * 2 * window_trained
    # the driver's resume: the corrupt newest checkpoint skipped with a warning, the override kept for the next one
    assert "cannot resume from" in open(os.path.join(run_dir, "chaos-driver.log"), encoding="utf-8").read()
    assert summary["restored_from"].endswith(newest["before"])
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as handle:
        assert yaml.safe_load(handle)["checkpoint"]["keep"] == 4
    assert no_actors_left() == []  # the learner, the scorers and the small actors all ended


def test_bad_inputs_and_a_killed_scorer(ray_local, tiny_model_dir, sst2_rows, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    good = [f"g{i}\t{text}\t{label}\n".encode() for i, (text, label) in enumerate(sst2_rows[:400])]
    bad = [
        b"g-missing\tonly two fields\n",                      # a missing field
        b"g-extra\ttoo\tmany\t1\n",                           # an extra field
        b"g-range\tlabel out of range\t7\n",                  # a label out of range
        b"g-type\ta label that is a word\tpositive\n",        # a label of the wrong type
        b"g-empty\t   \t1\n",                                 # whitespace text
        b"g-utf8\tinvalid \xff\xfe bytes\t0\n",               # invalid UTF-8
        b"g-nul\tnul\x00byte\t1\n",                           # a NUL byte
        b"g5\ta second row with an id already used\t1\n",     # a duplicate id
    ]
    huge = ("a very long text " * 62_000)[:1_000_000]
    lines = good[:200] + bad + good[200:] + [f"g-huge\t{huge}\t1\n".encode()]
    (folder / "001-sst2.tsv").write_bytes(b"id\tsentence\tlabel\n" + b"".join(lines))
    json_rows = [json.dumps({"id": f"j{i}", "sentence": text, "label": int(label)}) for i, (text, label)
                 in enumerate(sst2_rows[400:450])]
    json_bad = ['{"id": "j-broken", "sentence": "no closing brace", "label": 1',
                json.dumps({"id": "j-num", "sentence": 12345, "label": 1}),
                json.dumps({"id": "j-half", "sentence": "half a class", "label": 0.5}),
                json.dumps({"id": "j3", "sentence": "duplicate json id", "label": 0})]
    (folder / "002-more.jsonl").write_text("\n".join(json_rows + json_bad) + "\n")
    (folder / "003-empty.tsv").write_bytes(b"")
    (folder / "004-unreadable.csv").write_bytes(b"\xff\xfe\x00garbage header\n1,2\n")
    (folder / "005-folder.tsv").mkdir()
    run_dir = str(tmp_path / "run")
    cfg = small_config(tiny_model_dir, folder, run_dir, "stream.source=directory", "stream.id_field=id",
                       "stream.idle_timeout_s=2", "stream.poll_interval_s=0.2", "stream.rate=100")
    thread, box = in_thread(run_pipeline, cfg)
    # mid-run (the stream, paced at 100 rows a second, lasts about 5 s): after 3 updates, the scorer Ray runs
    scorer = wait_for(lambda: sum(r["kind"] == "update" for r in records(run_dir)) >= 3 and scorer_pid(ray_local),
                      what="a scorer at work")
    os.kill(scorer, signal.SIGKILL)
    summary = result_of(thread, box)
    rows = len(lines) + len(json_rows) + len(json_bad)
    assert_balanced(summary, rows)
    assert summary["samples_quarantined"] == len(bad) - 1 + len(json_bad) - 1 + 2  # + the 2 duplicate ids
    assert summary["quarantine_reasons"]["duplicate_id"] == 2
    assert summary["text_truncated"] == 1  # the 1 MB text was cut, not rejected
    assert sorted(item["file"] for item in summary["files_rejected"]) == ["004-unreadable.csv", "005-folder.tsv"]
    # Ray restarts the killed scorer at once; in a run this short its restart may still be starting when the run
    # ends (then it is not counted), but never more than once
    assert summary["scorers"] == 1 and 1 <= summary["scorer_starts"] <= 2
