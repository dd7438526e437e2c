"""`ol-ray bench serve`: what following a live run costs a server, and how fresh its answers are.

    ol-ray bench serve configs/sst2.yaml --clients 1 8 32 --seconds 10

One local Ray holds a run that learns from a feedback log (fed at --feed-rate rows/s with the config stream's rows),
the ol_ray Serve application of that run (it follows the run's published weights) and, beside it, a bare Ray Serve
deployment of the same starting model with the same batching that never reloads. For each number of concurrent
clients both are loaded in turn with /predict requests of the stream's texts, from a separate process, over
--rounds rounds whose order alternates, so that the machine's drift (the learner is training throughout) falls on
both alike. Figures: p50/p99 latency and requests/s of each, the ratios ol_ray / bare, and weight freshness: seconds
from a version's publish (the weight store's clock) to the first response that version answered.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import multiprocessing
import os
import shutil
import threading
import time
from typing import Any, Sequence

import numpy as np

from ol_ray.bench.harness import first_window, write_results
from ol_ray.config.schema import Config
from ol_ray.errors import ConfigError

READY_TIMEOUT_S = 600.0  # the run's first published weights reach the server within this (model loads, scorers start)
FEED_EVERY_S = 0.25  # the feeder appends a batch of rows to the log this often
WARMUP_S = 1.0  # each server answers requests this long before any is measured


# ---- the plain math: latency figures and freshness from what the clients saw ----

def latency_figures(answers: Sequence[tuple[float, float, int, int]], seconds: float) -> dict[str, Any]:
    """Requests, failures, requests/s and p50/p99 latency (ms) of a load's answers (sent_at, latency_s, status,
    weight_version), over the `seconds` it ran; failures count in the rate of neither."""
    ok = np.array([latency for _, latency, status, _ in answers if status == 200], dtype=float)
    return {"requests": len(answers), "failed": len(answers) - len(ok),
            "requests_per_s": len(ok) / seconds if seconds > 0 else 0.0,
            "p50_ms": float(np.percentile(ok, 50) * 1000) if len(ok) else float("nan"),
            "p99_ms": float(np.percentile(ok, 99) * 1000) if len(ok) else float("nan")}


def freshness(published: dict[int, float], answered: Sequence[tuple[float, int]],
              windows: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Seconds from each version's publish to the first answer (answered_at, version) that carried it, for the
    versions published while the ol_ray server was under load (`windows`: its rounds, from start to end; between
    them no request comes, so it pulls nothing): their count, how many an answer in the same round carried (the
    others were superseded before a pull: a replica takes the newest), and the median and largest delay. The delay
    is until the answer was received, so it includes that request's latency."""
    first: dict[int, float] = {}
    for answered_at, version in sorted(answered):
        first.setdefault(version, answered_at)
    delays = []
    inside = [(version, at, end) for version, at in published.items() for start, end in windows if start <= at < end]
    for version, at, end in inside:
        if version in first and at <= first[version] <= end:
            delays.append(first[version] - at)
    return {"versions_published": len(inside), "versions_answered": len(delays),
            "freshness_p50_s": float(np.median(delays)) if delays else float("nan"),
            "freshness_max_s": float(max(delays)) if delays else float("nan")}


# ---- the load generator: a process of its own, so its threads do not share the driver's interpreter ----

def _client(port: int, path: str, texts: Sequence[str], offset: int, deadline: float, out: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    position = offset
    while time.time() < deadline:
        body = json.dumps({"text": texts[position % len(texts)]})
        position += 1
        sent = time.time()
        try:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload, status = response.read(), response.status
            version = int(json.loads(payload).get("weight_version", -1)) if status == 200 else -1
        except (OSError, http.client.HTTPException, ValueError):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status, version = 0, -1
        out.append((sent, time.time() - sent, status, version))
    connection.close()


def load(port: int, path: str, texts: Sequence[str], clients: int, seconds: float
         ) -> list[tuple[float, float, int, int]]:
    """`clients` threads posting /predict back to back for `seconds`: every answer's (sent_at, latency_s, status,
    weight_version); a request that failed to connect or read has status 0."""
    deadline = time.time() + seconds
    answers: list[list] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, path, texts, index * 97, deadline, answers[index]))
               for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answer for part in answers for answer in part]


# ---- the two servers and the run they serve ----

def bare_application(cfg: Config, run_dir: str) -> Any:
    """The same model with the same batching behind a plain Serve deployment that never reloads its weights."""
    from ray import serve

    from ol_ray.serve.model import ServedModel

    @serve.deployment
    class BareServer:
        def __init__(self, cfg: Config, run_dir: str):
            self.model = ServedModel(cfg, run_dir)  # the run's newest checkpoint, else the configured model
            self.predict_batch.set_max_batch_size(cfg.serve.max_batch_size)
            self.predict_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_s)

        @serve.batch
        async def predict_batch(self, texts: list[str]) -> list[dict[str, Any]]:
            return self.model.predict(texts)

        async def __call__(self, request: Any) -> dict[str, Any]:
            return await self.predict_batch((await request.json())["text"])

    return BareServer.options(max_ongoing_requests=cfg.serve.max_ongoing_requests, ray_actor_options={
        "num_cpus": cfg.serve.num_cpus, "num_gpus": cfg.serve.num_gpus}).bind(cfg, run_dir)


def check_room(cfg: Config, cpus: float) -> None:
    """A clear error when the learner, the scorers and both servers' replicas cannot all run at once."""
    need = (cfg.learner.num_cpus + cfg.scoring.num_cpus * cfg.scoring.num_scorers
            + 2 * cfg.serve.num_cpus * cfg.serve.replicas)
    if need > cpus:
        raise ConfigError(f"the learner ({cfg.learner.num_cpus:g} CPU), the scorers ({cfg.scoring.num_scorers} x "
                          f"{cfg.scoring.num_cpus:g}) and two servers ({cfg.serve.replicas} x {cfg.serve.num_cpus:g} "
                          f"each) need {need:g} CPUs and Ray has {cpus:g}: lower learner.num_cpus or "
                          f"serve.num_cpus (e.g. learner.num_cpus=0.5 on 2 cores)")


def feedback_run_config(cfg: Config, out_dir: str, idle_timeout_s: float) -> Config:
    """The config's run, fed from a feedback log in its run directory and publishing for the server."""
    run_dir = os.path.abspath(os.path.join(out_dir, "run"))
    stream = dataclasses.replace(cfg.stream, source="feedback", path=os.path.join(run_dir, "feedback.jsonl"),
                                 max_samples=0, rate=0.0, idle_timeout_s=idle_timeout_s,
                                 poll_interval_s=min(cfg.stream.poll_interval_s, 0.2))
    return dataclasses.replace(cfg, stream=stream, learner=dataclasses.replace(cfg.learner, publish_for_serving=True),
                               output=dataclasses.replace(cfg.output, run_dir=run_dir, progress=False))


def feed(cfg: Config, items: Sequence[dict[str, Any]], rate: float, stop: threading.Event,
         outcome: dict[str, Any]) -> None:
    """Append the items (round and round) to the run's feedback log at `rate` per second until `stop`; a failure
    goes to `outcome["feed_error"]` (the benchmark reports it rather than measuring a run that starves)."""
    try:
        _feed(cfg, items, rate, stop)
    except Exception as error:
        outcome["feed_error"] = error
        raise


def _feed(cfg: Config, items: Sequence[dict[str, Any]], rate: float, stop: threading.Event) -> None:
    from ol_ray.data.feedback import FeedbackLog
    from ol_ray.data.validation import FieldSpec

    log = FeedbackLog(cfg.stream.path, FieldSpec.from_config(cfg))
    per_append, position = max(1, int(round(rate * FEED_EVERY_S))), 0
    while not stop.is_set():
        log.append([items[(position + i) % len(items)] for i in range(per_append)])
        position += per_append
        stop.wait(FEED_EVERY_S)


def feedback_items(cfg: Config, samples: int) -> list[dict[str, Any]]:
    """The first `samples` valid rows of the configured stream as feedback items of its fields."""
    from ol_ray.data.validation import FieldSpec, split_records

    window = first_window(cfg, samples)
    rows, _ = split_records([r["sample_id"] for r in window.records], [r["raw"] for r in window.records],
                            window.record_format, FieldSpec.from_config(cfg), 0)
    return [{cfg.stream.text_field: row.text, cfg.stream.label_field: row.label} for row in rows]


def get_json(port: int, path: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def wait_for_live_weights(port: int, runner: threading.Thread, outcome: dict[str, Any]) -> None:
    """Until the ol_ray server answers with weights the live run published (the run has trained and published)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not runner.is_alive():
            raise RuntimeError(f"the run ended before the server followed it: {outcome.get('error')!r}")
        try:
            health = get_json(port, "/healthz")
            if health["weights_from"] == "the live run" and health["weight_version"] > 0:
                return
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not follow the run's published weights in time: see the run's logs")


# ---- the benchmark ----

def measure(port: int, texts: Sequence[str], clients: Sequence[int], seconds: float, rounds: int
            ) -> tuple[list[dict[str, Any]], list[tuple[float, int]], list[tuple[float, float]]]:
    """Each client count against both servers, `rounds` times in alternating order: a row per count and server,
    every (answered_at, version) of the ol_ray server, and the (start, end) of its rounds."""
    targets = {"ol_ray": "/predict", "bare": "/bare"}
    for path in targets.values():
        load(port, path, texts, 1, WARMUP_S)
    rows, answered, windows = [], [], []
    with multiprocessing.get_context("spawn").Pool(1) as clients_process:
        for count in clients:
            seen: dict[str, list] = {name: [] for name in targets}
            for round_index in range(rounds):
                order = list(targets) if round_index % 2 == 0 else list(reversed(targets))
                for name in order:
                    started = time.time()
                    seen[name].extend(clients_process.apply(load, (port, targets[name], texts, count,
                                                                   seconds / rounds)))
                    if name == "ol_ray":
                        windows.append((started, time.time()))
            answered.extend((sent + latency, version) for sent, latency, status, version in seen["ol_ray"]
                            if status == 200)
            rows.extend(compared(count, seen["ol_ray"], seen["bare"], seconds))
    return rows, answered, windows


def compared(count: int, ours: list, bare: list, seconds: float) -> list[dict[str, Any]]:
    """The rows of one client count: ol_ray's with its ratios to the bare deployment's, then the bare one's."""
    mine = {"clients": count, "server": "ol_ray", **latency_figures(ours, seconds)}
    base = {"clients": count, "server": "bare", **latency_figures(bare, seconds)}
    mine["throughput_ratio"] = mine["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else 0.0
    mine["p50_ratio"], mine["p99_ratio"] = mine["p50_ms"] / base["p50_ms"], mine["p99_ms"] / base["p99_ms"]
    print(f"{count} clients: ol_ray {mine['requests_per_s']:.1f} req/s p50 {mine['p50_ms']:.0f} ms p99 "
          f"{mine['p99_ms']:.0f} ms; bare {base['requests_per_s']:.1f} req/s p50 {base['p50_ms']:.0f} ms "
          f"p99 {base['p99_ms']:.0f} ms", flush=True)
    return [mine, base]


def serve_bench(cfg: Config, clients: Sequence[int] = (1, 8, 32), seconds: float = 10.0, rounds: int = 2,
                feed_rate: float = 40.0, samples: int = 2000, out_dir: str = "runs/bench-serve"
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The latency and throughput rows and the freshness figures (see the module docstring).

    Long because the run, the feeder and both servers share one Ray for the whole measurement, and each is
    started and stopped in order around it.
    """
    import ray
    from ray import serve

    from ol_ray.driver.cluster import NAMESPACE, actor_name, start_ray
    from ol_ray.driver.pipeline import run_pipeline
    from ol_ray.serve.app import application, feedback_token

    if cfg.stream.id_field:
        raise ConfigError("ol-ray bench serve feeds the stream's text and label fields only: unset stream.id_field")
    items = feedback_items(cfg, samples)
    texts = [item[cfg.stream.text_field] for item in items]
    run_cfg = feedback_run_config(cfg, out_dir, idle_timeout_s=max(2.0, 4 * cfg.stream.max_window_wait_s))
    shutil.rmtree(run_cfg.output.run_dir, ignore_errors=True)  # the benchmark's own run, from its last time
    os.makedirs(run_cfg.output.run_dir)
    stop, outcome = threading.Event(), {}
    feeder = threading.Thread(target=feed, args=(run_cfg, items, feed_rate, stop, outcome), daemon=True)

    def run() -> None:
        try:
            outcome["summary"] = run_pipeline(run_cfg)
        except Exception as error:  # reported by the waits below
            outcome["error"] = error
            raise

    runner = threading.Thread(target=run, daemon=True)
    own_ray = start_ray(run_cfg)
    try:
        check_room(run_cfg, ray.cluster_resources().get("CPU", 0.0))
        feeder.start()
        runner.start()  # the run starts while the servers deploy; the ol_ray server finds it once it is live
        feedback_token(run_cfg)  # the same refusal as `ol-ray serve` beyond loopback without a token
        serve.start(http_options={"host": run_cfg.serve.host, "port": run_cfg.serve.port})
        serve.run_many([serve.RunTarget(application(run_cfg, run_cfg.output.run_dir), name="ol_ray", route_prefix="/"),
                        serve.RunTarget(bare_application(run_cfg, run_cfg.output.run_dir), name="bare",
                                        route_prefix="/bare")])  # both deploy at once
        port = run_cfg.serve.port
        wait_for_live_weights(port, runner, outcome)
        rows, answered, windows = measure(port, texts, clients, seconds, rounds)
        alive = runner.is_alive() and "feed_error" not in outcome
        try:
            store = ray.get_actor(actor_name("weights", run_cfg.output.run_dir), namespace=NAMESPACE)
            published = ray.get(store.publish_times.remote())
        except (ValueError, ray.exceptions.RayActorError):  # the run ended (it failed): no publish times
            published = {}
        fresh = {**freshness(published, answered, windows), "run_alive_throughout": alive}
    finally:
        stop.set()
        runner.join(timeout=300)
        if own_ray:
            serve.shutdown()
            ray.shutdown()
        else:  # a cluster of the user's: only what this benchmark deployed
            for name in ("ol_ray", "bare"):
                serve.delete(name)
    if "feed_error" in outcome:
        raise RuntimeError(f"the feeder failed, so the run starved: {outcome['feed_error']!r}")
    fresh["updates"] = outcome["summary"].updates if "summary" in outcome else 0
    print(write_results(rows, out_dir, "serve"))
    print("weight freshness: " + ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                                           for key, value in fresh.items()))
    with open(os.path.join(out_dir, "freshness.json"), "w", encoding="utf-8") as handle:
        json.dump(fresh, handle, indent=2)
    return rows, fresh


HELP = "serving latency and throughput while the run learns, against a bare Serve deployment; weight freshness"
DESCRIPTION = ("p50/p99 latency and requests/s of /predict at each --clients count, served by ol_ray's Serve "
               "application following a live run fed from a feedback log, and by a bare Ray Serve deployment of "
               "the same model that never reloads (the ratio is the figure); and seconds from a weight version's "
               "publish to the first response it answered.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `ol-ray bench serve` (after the config and its overrides)."""
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent client counts (default 1 8 32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load seconds per count and server (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per count, the servers' order alternating")
    parser.add_argument("--feed-rate", type=float, default=40.0, help="feedback rows appended per second (default 40)")
    parser.add_argument("--samples", type=int, default=2000, help="rows of the stream to feed and ask (default 2000)")
    parser.add_argument("--out", default="runs/bench-serve", help="where the CSV, markdown and freshness.json go")


def main(cfg: Config, args: argparse.Namespace) -> int:
    """`ol-ray bench serve` with parsed arguments."""
    serve_bench(cfg, clients=args.clients, seconds=args.seconds, rounds=args.rounds, feed_rate=args.feed_rate,
                samples=args.samples, out_dir=args.out)
    return 0
