"""The Ray Serve application of a run: `ol-ray serve RUN_DIR`, or `serve run ol_ray.serve.app:build run_dir=RUN_DIR`.

    POST /predict   {"text": ...} or {"texts": [...]}  -> label, probabilities, weight_version (a classifier)
    POST /generate  {"prompt": ...} or {"messages": [...]}, "max_new_tokens" -> text, weight_version (a causal LM)
    POST /feedback  an item of the stream's fields, or {"items": [...]} -> ids, once durably in the feedback log
    GET  /healthz   -> the served weight version and where the weights come from

Concurrent /predict requests are batched (`serve.max_batch_size`, `serve.batch_wait_s`); each replica follows the
live run's weight store between batches (`ol_ray.serve.model`), so no request sees weights change under it and every
answer names its `weight_version`. /feedback appends to the run's feedback log (`ol_ray.data.feedback`), which a run
with `stream.source: feedback` follows (or, for a run that reads Kafka, produces to its topic): an acknowledged item is
durable; one that could not be made so gets 503 and no id. Defaults are safe: loopback only;
beyond loopback (or with `serve.require_token`) /feedback needs `Authorization: Bearer $OL_RAY_FEEDBACK_TOKEN`;
bodies over `serve.max_request_bytes` get 413; nothing in the API changes the model or the config.
"""

import asyncio
import hmac
import json
import os
import threading
import time
from typing import Any, Callable, Optional

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from ol_ray.config.load import load_run_config
from ol_ray.config.schema import Config
from ol_ray.data.feedback import FeedbackError, FeedbackUnavailable, feedback_sink
from ol_ray.driver.cluster import NAMESPACE, actor_name
from ol_ray.serve.model import ServedModel

LOOPBACK = ("127.0.0.1", "localhost", "::1")
APP_NAME = "ol_ray"  # the Serve application's name (`ol-ray serve` deletes only it when it stops)
FIND_RUN_EVERY_S = 2.0  # with no live run, look for one (a run started after the server) this often

api = FastAPI(title="ol_ray", docs_url=None, redoc_url=None)


def feedback_token(cfg: Config) -> Optional[str]:
    """The bearer token /feedback asks for: required beyond loopback (a missing one is an error), else None."""
    if cfg.serve.host not in LOOPBACK or cfg.serve.require_token:
        token = os.environ.get(cfg.serve.token_env, "")
        if not token:
            raise RuntimeError(f"serve.host={cfg.serve.host} takes /feedback only with a bearer token: set "
                               f"${cfg.serve.token_env} (serve.token_env) on every node that runs a replica")
        return token
    return None


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


@serve.deployment
@serve.ingress(api)
class ModelServer:
    """One replica: the served model, the feedback log, and the HTTP routes."""

    def __init__(self, cfg: Config, run_dir: str):
        self.cfg, self.run_dir = cfg, run_dir
        self.token = feedback_token(cfg)
        self.model = ServedModel(cfg, run_dir)
        self.lock = threading.Lock()  # one use of the model at a time: a refresh never swaps weights under an answer
        self.looked_for_run = 0.0
        self.find_run()
        path = cfg.serve.feedback_path or os.path.join(run_dir, "feedback.jsonl")
        self.feedback = feedback_sink(cfg, path, cfg.serve.max_items, cfg.serve.feedback_topic)
        self.predict_batch.set_max_batch_size(cfg.serve.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_s)

    def find_run(self) -> None:
        """Follow the run's weight store when the run is live (found by name in Ray)."""
        self.looked_for_run = time.monotonic()
        try:
            store = ray.get_actor(actor_name("weights", self.run_dir), namespace=NAMESPACE)
        except ValueError:  # no run of this directory is live (yet): serve the newest checkpoint
            return
        self.model.follow(store)

    def refresh(self) -> None:
        """Between batches: newer weights from the live run; with none live, now and then look for a run started
        since, else a checkpoint newer than the served weights (the end of a run no request saw)."""
        if self.model.client is None:
            if time.monotonic() - self.looked_for_run >= FIND_RUN_EVERY_S:
                self.find_run()
                if self.model.client is None:
                    self.model.take_newer_checkpoint()
            return
        try:
            self.model.refresh()
        except ray.exceptions.RayActorError:  # the run ended (or its store is restarting): its last checkpoint
            self.model.take_newer_checkpoint()

    def answer(self, work: Callable[[], Any]) -> Any:
        """In a worker thread (the event loop stays free for /feedback and /healthz): newer weights, then `work`
        with them, under the model's lock."""
        with self.lock:
            self.refresh()
            return work()

    def refresh_if_idle(self) -> None:
        if self.lock.acquire(blocking=False):
            try:
                self.refresh()
            finally:
                self.lock.release()

    async def parsed(self, request: Request, kind: str = "") -> tuple[Any, Optional[JSONResponse]]:
        """The request's JSON, or the error response: the wrong model kind for the route, too large, not JSON."""
        if kind and self.cfg.model.kind != kind:
            other = "/generate" if kind == "sequence_classification" else "/predict"
            return None, error(400, f"this run's model is a {self.cfg.model.kind}: POST {other}")
        limit = self.cfg.serve.max_request_bytes
        if int(request.headers.get("content-length") or 0) > limit or len(raw := await request.body()) > limit:
            return None, error(413, f"the request is over serve.max_request_bytes ({limit} bytes)")
        try:
            return json.loads(raw), None
        except ValueError:
            return None, error(400, "the request body is not JSON")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.answer, lambda: self.model.predict(texts))

    @api.post("/predict")
    async def predict(self, request: Request) -> Any:
        payload, problem = await self.parsed(request, "sequence_classification")
        if problem:
            return problem
        texts = payload.get("texts", [payload.get("text")]) if isinstance(payload, dict) else None
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            return error(400, "send {\"text\": \"...\"} or {\"texts\": [\"...\", ...]} of non-empty strings",
                         field="text")
        if len(texts) > self.cfg.serve.max_items:
            return error(400, f"{len(texts)} texts is over serve.max_items ({self.cfg.serve.max_items})",
                         field="texts")
        answers = await asyncio.gather(*(self.predict_batch(text) for text in texts))
        return answers[0] if "texts" not in payload else {"predictions": answers}

    @api.post("/generate")
    async def generate(self, request: Request) -> Any:
        payload, problem = await self.parsed(request, "causal_lm")
        if problem:
            return problem
        if not isinstance(payload, dict):
            return error(400, "send {\"prompt\": \"...\"} or {\"messages\": [...]}", field="prompt")
        prompt, messages = payload.get("prompt", ""), payload.get("messages")
        if messages is not None and not (isinstance(messages, list) and all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
            return error(400, "messages must be a list of {role, content}", field="messages")
        if messages is None and not (isinstance(prompt, str) and prompt.strip()):
            return error(400, "send a non-empty prompt or messages", field="prompt")
        limit = payload.get("max_new_tokens", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= self.cfg.serve.max_new_tokens:
            return error(400, f"max_new_tokens must be an integer from 1 to {self.cfg.serve.max_new_tokens}",
                         field="max_new_tokens")
        return await asyncio.to_thread(self.answer, lambda: self.model.generate(prompt, messages, limit))

    @api.post("/feedback")
    async def feedback(self, request: Request) -> Any:
        if self.token is not None:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                return error(401, "/feedback needs Authorization: Bearer <token>")
        payload, problem = await self.parsed(request)
        if problem:
            return problem
        items = payload.get("items") if isinstance(payload, dict) and "items" in payload else [payload]
        try:
            ids = await asyncio.to_thread(self.feedback.append, items)
        except FeedbackError as bad:
            return error(400, bad.reason, index=bad.index, field=bad.field)
        except FeedbackUnavailable as unavailable:  # good items, not durable: nothing is acknowledged, retry
            return error(503, str(unavailable))
        return {"ids": ids}

    @api.get("/healthz")
    async def healthz(self) -> Any:
        await asyncio.to_thread(self.refresh_if_idle)
        return {"weight_version": self.model.weight_version, "weights_from": "the live run" if self.model.client
                else self.model.source, "kind": self.cfg.model.kind}


def application(cfg: Config, run_dir: str) -> Any:
    """The bound Serve application of a run."""
    s = cfg.serve
    return ModelServer.options(num_replicas=s.replicas, max_ongoing_requests=s.max_ongoing_requests,
                               ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus}
                               ).bind(cfg, os.path.abspath(run_dir))


def build(args: dict[str, Any]) -> Any:
    """For `serve run ol_ray.serve.app:build run_dir=RUN_DIR` and `serve deploy`: the run's config with
    `overrides` (a comma-separated list of section.key=value)."""
    overrides = [item for item in str(args.get("overrides", "")).split(",") if item]
    return application(load_run_config(args["run_dir"], overrides), args["run_dir"])


def start(cfg: Config, run_dir: str) -> Any:
    """Deploy the application on the connected Ray, listening on serve.host:serve.port; returns its handle."""
    feedback_token(cfg)  # fail here, in one sentence, rather than in every replica
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    return serve.run(application(cfg, run_dir), name=APP_NAME, route_prefix="/")
