"""Serve, collect feedback, learn, over real HTTP on loopback: a Serve application of a live run (tiny model, local
Ray) answers a bounded load without a failed request while its weight version rises, takes labelled feedback that
the run then trains on, and refuses every kind of bad request with the reason."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from ol_ray.config import load_config
from ol_ray.driver.pipeline import run_pipeline
from ol_ray.state.ledger import LEDGER_LOG

from conftest import free_port
from data_files import generated_rows


def post(url, payload, headers=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as failed:
        body = failed.read()
        try:
            return failed.code, json.loads(body or b"{}")
        except ValueError:  # a proxy's error page
            return failed.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, ConnectionError):  # the connection broke (a replica killed under it)
        return 0, {}


def longest_strictly_decreasing(values):
    """Its length: answers from k replicas that each only move forward never decrease more than k times in a row."""
    tails = []  # tails[i]: the largest last value of a strictly decreasing run of length i + 1
    for value in values:
        low, high = 0, len(tails)
        while low < high:
            middle = (low + high) // 2
            if tails[middle] > value:
                low = middle + 1
            else:
                high = middle
        tails[low:low + 1] = [value]
    return len(tails)


def replica_pids(ray_module):
    return [actor["Pid"] for actor in ray_module._private.state.actors().values()
            if actor["ActorClassName"] == "ServeReplica:ol_ray:ModelServer" and actor["State"] == "ALIVE"]


@pytest.fixture(scope="module")
def serving_ray(ray_local):
    """The suite's Ray (in the runs' namespace, where a server finds a run's weight store); Serve ends with the
    module."""
    from ray import serve

    yield ray_local
    serve.shutdown()


def accuracy(base, rows):
    status, reply = post(f"{base}/predict", {"texts": [text for text, _ in rows]})
    assert status == 200, reply
    return sum(p["label"] == int(label) for p, (_, label) in zip(reply["predictions"], rows)) / len(rows)


def test_serve_follows_a_live_run_and_its_feedback_is_trained(serving_ray, tiny_model_dir, tmp_path):
    from ol_ray.serve.app import start

    run_dir, port = tmp_path / "run", free_port()
    overrides = [
        "stream.source=feedback", f"stream.path={run_dir / 'feedback.jsonl'}", "stream.text_field=sentence",
        "stream.window_size=16", "stream.max_window_wait_s=0.5", "stream.poll_interval_s=0.2",
        "stream.idle_timeout_s=2", f"model.name_or_path={tiny_model_dir}", "model.max_length=32",
        "selection.strategy=random", "learner.publish_for_serving=true", "selection.pool_size=16",
        "batching.batch_size=8", "learner.lr=3e-3", "checkpoint.every_updates=8",
        "learner.torch_threads=1", "learner.num_cpus=0.5", "scoring.num_cpus=0.5", f"output.run_dir={run_dir}",
        "output.progress=false", f"serve.port={port}", "serve.replicas=2", "serve.num_cpus=0.25",
        "serve.refresh_every_s=0.2"]
    cfg = load_config(None, overrides)
    os.makedirs(run_dir)
    start(cfg, str(run_dir))  # before the run: it serves the configured model, and finds the run once it starts
    base = f"http://127.0.0.1:{port}"
    rows, held_out = generated_rows(2000, seed=1), generated_rows(64, seed=2)  # reviews labelled by their words
    accuracy_before = accuracy(base, held_out)
    assert post(f"{base}/predict", {"text": "a fine film"})[1]["weight_version"] == 0
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=run_pipeline(cfg)))
    runner.start()
    acknowledged = []
    status, reply = post(f"{base}/feedback", {"items": [{"sentence": text, "label": label}
                                                        for text, label in rows[:40]]})
    assert status == 200, reply
    acknowledged.extend(reply["ids"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the replica looks for a live run every few seconds
        health = json.loads(urllib.request.urlopen(f"{base}/healthz").read())
        if health["weights_from"] == "the live run":
            break
        time.sleep(0.5)
    assert health["weights_from"] == "the live run", health

    answers, stop, posted_enough, failed_posts = [], threading.Event(), threading.Event(), []

    def load():  # bounded in count and time
        started = time.monotonic()
        while not stop.is_set() and len(answers) < 3000 and time.monotonic() - started < 60:
            answers.append(post(f"{base}/predict", {"text": "a fine , moving film"}))

    def trickle():  # feedback all along, so the run stays live; bounded: 200 posts of 2
        for start_row in range(1600, 2000, 2):
            if posted_enough.is_set():
                return
            status, reply = post(f"{base}/feedback", {"items": [{"sentence": text, "label": label}
                                                                for text, label in rows[start_row:start_row + 2]]})
            acknowledged.extend(reply["ids"]) if status == 200 else failed_posts.append(status)
            time.sleep(0.1)

    loader, poster = threading.Thread(target=load), threading.Thread(target=trickle)
    loader.start()
    poster.start()
    for start_row in (40, 100):  # and in bulk
        status, reply = post(f"{base}/feedback", {"items": [{"sentence": text, "label": label}
                                                            for text, label in rows[start_row:start_row + 60]]})
        assert status == 200, reply
        acknowledged.extend(reply["ids"])
        time.sleep(0.1)
    status, reply = post(f"{base}/feedback", {"sentence": "one more , alone", "label": 1})
    acknowledged.extend(reply["ids"])

    bad = [({"items": []}, "items"), ({"sentence": "no label"}, "label"), ({"label": 1}, "sentence"),
           ({"sentence": "x", "label": 7}, "label"), ({"sentence": "x", "label": "yes"}, "label"), ([1, 2], "item"),
           ({"items": [{"sentence": "x", "label": 1}] * 65}, "items")]
    for payload, field in bad:
        status, reply = post(f"{base}/feedback", payload)
        assert (status, reply.get("field")) == (400, field), (payload, reply)
    assert post(f"{base}/feedback", None, raw=b"{not json")[0] == 400
    assert post(f"{base}/feedback", None, raw=b'{"sentence": "' + b"x" * 1_000_001 + b'", "label": 1}')[0] == 413
    assert post(f"{base}/predict", {"text": ""})[0] == 400 and post(f"{base}/generate", {"prompt": "hi"})[0] == 400

    while loader.is_alive() and not any(reply.get("weight_version", 0) > answers[0][1]["weight_version"]
                                        for _, reply in answers[-5:]):
        time.sleep(0.2)  # until the answers show the run's newer weights (the loader's own bounds hold)
    stop.set()
    loader.join()
    assert all(status == 200 for status, _ in answers) and len(answers) >= 20  # not one failed request
    versions = [reply["weight_version"] for _, reply in answers]
    assert max(versions) > versions[0] and longest_strictly_decreasing(versions) <= 2  # each replica only forward
    assert len(answers[0][1]["probabilities"]) == 2

    # a replica killed while feedback is posted: what was acknowledged is on disk, whichever replica took it
    victims = replica_pids(serving_ray)
    assert len(victims) == 2, victims
    acknowledged_before = len(acknowledged)
    os.kill(victims[0], signal.SIGKILL)
    time.sleep(1.5)
    posted_enough.set()
    poster.join()
    assert victims[0] not in replica_pids(serving_ray) and len(acknowledged) > acknowledged_before
    for start_row in range(160, 1600, 60):  # the rest in bulk, before the run idles: what the held-out set tests
        status, reply = post(f"{base}/feedback", {"items": [{"sentence": text, "label": label}
                                                            for text, label in rows[start_row:start_row + 60]]})
        assert status == 200, reply
        acknowledged.extend(reply["ids"])

    runner.join(timeout=240)
    summary = outcome["summary"]
    logged = [json.loads(line)["id"] for line in open(run_dir / "feedback.jsonl", encoding="utf-8")]
    assert set(acknowledged) <= set(logged) and len(logged) == len(set(logged))  # a lost reply may leave one extra
    assert summary.accounting_ok and summary.samples_read == len(logged)
    ledger = [json.loads(line) for line in open(run_dir / LEDGER_LOG, encoding="utf-8")]
    accounted = {i for entry in ledger for key in ("trained", "not_selected") for i in entry.get(key, [])}
    assert accounted == set(logged)  # every acknowledged item trained or, read, not selected
    accuracy_after = accuracy(base, held_out)  # the run is over: it serves on, with what the feedback taught it
    assert accuracy_after >= accuracy_before + 0.15, (accuracy_before, accuracy_after, summary.updates, len(logged))


def test_ol_ray_serve_serves_a_causal_lm_and_takes_its_rated_and_chat_feedback(serving_ray, tiny_gpt2_dir, tmp_path):
    """`ol-ray serve` as a user runs it: its own process, joining the run's Ray by address (`ray.address`)."""
    import subprocess
    import sys

    import yaml
    from ray import serve

    from ol_ray.config import to_dict

    serve.shutdown()  # the classifier's application: the command starts Serve on its own port

    run_dir, port = tmp_path / "lm-run", free_port()
    cfg = load_config(None, [
        "stream.source=feedback", f"stream.path={run_dir / 'feedback.jsonl'}", "stream.text_field=text",
        "stream.window_size=8", "stream.max_window_wait_s=0.3", "stream.poll_interval_s=0.1",
        "stream.idle_timeout_s=1.5", "stream.rating_field=rating", f"model.name_or_path={tiny_gpt2_dir}",
        "model.kind=causal_lm",
        "model.max_length=48", "selection.strategy=random", "selection.pool_size=8", "batching.batch_size=4",
        "learner.torch_threads=1", "learner.num_cpus=0.5", f"output.run_dir={run_dir}", "output.progress=false",
        "serve.num_cpus=0.5", "serve.max_new_tokens=8"])
    os.makedirs(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))  # as a run leaves it
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    address = serving_ray.get_runtime_context().gcs_address
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ol-ray"), "serve", str(run_dir),
                                   f"serve.port={port}", f"ray.address={address}"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        served_by_the_cli(cfg, run_dir, port, server, tmp_path / "serve.log")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # as docker stop and systemd stop it (Ctrl-C: KeyboardInterrupt)
        assert server.wait(timeout=60) == 0  # stops cleanly


def served_by_the_cli(cfg, run_dir, port, server, log):
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while post(f"{base}/generate", {"prompt": "hi"})[0] != 200:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    status, reply = post(f"{base}/generate", {"prompt": "the cat sat on", "max_new_tokens": 4})
    assert status == 200 and reply["tokens"] <= 4 and isinstance(reply["text"], str) and reply["weight_version"] == 0
    status, reply = post(f"{base}/generate", {"messages": [{"role": "user", "content": "the dog ran"}]})
    assert status == 200 and reply["tokens"] <= 8

    items = [{"prompt": "the cat sat on", "response": "the mat .", "rating": 1.0},
             {"prompt": "a dog ran", "response": "in the park .", "rating": 0},  # a thumbs down: kept, weighs 0
             {"prompt": "birds sing in", "response": "the morning .", "rating": True},
             {"messages": [{"role": "user", "content": "the dog ran"},
                           {"role": "assistant", "content": "in the park ."}], "rating": 0.5},
             {"text": "we read a good book ."}]
    status, reply = post(f"{base}/feedback", {"items": items * 4})
    assert status == 200 and len(reply["ids"]) == 20
    ids = reply["ids"]
    bad = [({"prompt": "x", "response": "y", "rating": 2}, "rating"),
           ({"prompt": "x", "response": "y", "rating": "great"}, "rating"),
           ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),  # nothing of the assistant to learn
           ({"response": "y"}, "prompt"), ({"text": ""}, "text"), ({"text": 5}, "text")]
    for payload, field in bad:
        status, reply = post(f"{base}/feedback", payload)
        assert (status, reply.get("field")) == (400, field), (payload, reply)
    assert post(f"{base}/generate", {"prompt": "x", "max_new_tokens": 9})[1].get("field") == "max_new_tokens"
    assert post(f"{base}/generate", {"messages": "hi"})[1].get("field") == "messages"
    assert post(f"{base}/predict", {"text": "a causal LM has no classes"})[0] == 400

    summary = run_pipeline(cfg)  # follows the log until 1.5 s without a line
    ledger = [json.loads(line) for line in open(run_dir / LEDGER_LOG, encoding="utf-8")]
    assert {i for entry in ledger for i in entry.get("trained", []) + entry.get("not_selected", [])} == set(ids)
    assert summary.accounting_ok and summary.updates >= 3  # pools of 8, 4 of each trained
    deadline = time.monotonic() + 15  # the server takes the run's last checkpoint on its next look
    while json.loads(urllib.request.urlopen(f"{base}/healthz").read())["weight_version"] != summary.updates:
        assert time.monotonic() < deadline, "the server did not take the run's last checkpoint"
        time.sleep(0.5)
    assert post(f"{base}/generate", {"prompt": "the cat sat on"})[1]["weight_version"] == summary.updates


def test_build_makes_the_application_serve_run_deploys_from_the_run_directory_and_overrides(tiny_model_dir, tmp_path):
    import yaml

    from ol_ray.config import ConfigError, to_dict
    from ol_ray.serve.app import build

    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}", "serve.max_batch_size=8"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    app = build({"run_dir": str(tmp_path), "overrides": "serve.replicas=3,serve.num_cpus=0.25"})
    deployment = app._bound_deployment  # Serve keeps the bound deployment here; what `serve run` deploys
    assert (deployment.num_replicas, deployment.ray_actor_options["num_cpus"]) == (3, 0.25)
    assert deployment.max_ongoing_requests == 32
    served_cfg, served_dir = deployment.init_args
    assert served_cfg.serve.max_batch_size == 8 and served_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="not an ol_ray run directory"):
        build({"run_dir": str(tmp_path / "nowhere")})
