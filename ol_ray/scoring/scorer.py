"""Scoring: per-sample statistics with the newest weights a scorer has, tagged with their weight version.

The math is the task's (`ol_ray.tasks`: a classifier's in `ol_ray.tasks.classification`, a causal
LM's in `ol_ray.tasks.causal_lm`), callable without Ray; each is asked only for the statistics the run reads.

`Scorer` is the actor around them, one of the run's pool (`ol_ray.scoring.pool`), started once and kept for the
whole run: it validates, tokenizes and scores chunks of the stream; before each chunk it asks the weight store for
the newest version and pulls weights only when they are newer.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np
import ray
import torch
from torch import nn

from ol_ray.config.schema import Config
from ol_ray.models.loading import device_for, load_model, load_numpy_state, load_tokenizer, output_layer, pad_id_of
from ol_ray.scoring.chunks import Chunk, ChunkResult, prepare_chunk
from ol_ray.tasks import task_for
from ol_ray.tasks.classification import exact_grad_norms
from ol_ray.weights.store import WeightClient


class Scorer:
    """Ray actor, started once per run and kept across windows and checkpoints: turns chunks of raw records into
    blocks of candidates (validated, tokenized and, with `columns` other than (), scored with the newest published
    weights). Create with ray.remote(Scorer).options(max_restarts=-1, max_task_retries=-1, ...): a restarted scorer
    runs __init__ again, pulls the newest weights, and Ray retries the chunk it was on."""

    def __init__(self, cfg: Config, weight_store: Any, monitor: Any = None, quarantine: Any = None,
                 irreducible: Optional[dict[str, Any]] = None, columns: Optional[tuple[str, ...]] = None):
        torch.set_num_threads(cfg.scoring.torch_threads)
        self.cfg = cfg
        self.task = task_for(cfg.model.kind)
        self.columns = columns  # the statistics the strategy, policy and prequential figures read; None = all
        self.quarantine = quarantine
        self.specs: dict[str, Any] = {}  # validation's field spec per stream phase
        self.monitor = monitor
        self.node_id = ray.get_runtime_context().get_node_id()
        weight_store.scorer_started.remote(os.getpid(), self.node_id)
        self.model = None
        if columns != ():
            self.device = device_for(cfg.scoring.num_gpus)
            self.model = load_model(cfg.model, pretrained=False).to(self.device)
            self.head = output_layer(self.model, cfg.model)
            self.pad_id = pad_id_of(load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code))
            self.weights = WeightClient(weight_store)
            # a new or restarted scorer starts from the newest weights
            self.weights.refresh(self.model, wait=True, timeout_s=cfg.learner.start_timeout_s)
            self.irreducible = None
            if isinstance(irreducible, ray.ObjectRef):  # the state travels once through the object store
                irreducible = ray.get(irreducible)
            if irreducible is not None:  # rho_loss: the fixed irreducible-loss model, trained on the holdout
                self.irreducible = load_model(cfg.model, pretrained=False).to(self.device)
                load_numpy_state(self.irreducible, irreducible)
                self.irreducible_head = output_layer(self.irreducible, cfg.model)
            self.scored_counter = _counter("ol_ray_samples_scored", "Samples scored by ol_ray scorers.")

    @ray.method(num_returns=2)
    def process(self, chunk: Chunk) -> tuple[ChunkResult, dict[str, np.ndarray]]:
        """A chunk's candidates, and the record the driver accounts for it by (the block goes on by reference)."""
        started = time.perf_counter()
        block = prepare_chunk(chunk, self.cfg, self.quarantine, self.specs)
        kept = len(block["sample_id"])
        version = -1
        if kept and self.model is not None:
            block = self(block)
            version = int(block["weight_version"][0])
        elapsed = time.perf_counter() - started
        if self.monitor is not None:
            self.monitor.report.remote("scorer", {"samples": len(chunk), "seconds": elapsed, "pid": os.getpid(),
                                                  "node_id": self.node_id})
        return ChunkResult(chunk.sequence, chunk.window, len(chunk), kept, len(chunk) - kept, version,
                           elapsed), block

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A tokenized batch with its statistics and the weight version they came from."""
        size = len(batch["sample_id"])
        self.weights.refresh(self.model)
        stats = self._score(self.model, self.head, batch)
        if self.irreducible is not None:
            stats["irreducible_loss"] = self._score(self.irreducible, self.irreducible_head, batch)["loss"]
        if self.cfg.scoring.grad_norm == "exact":
            stats["grad_norm"] = exact_grad_norms(self.model, batch["input_ids"], batch["label"], self.pad_id,
                                                  self.device)
        self.weights.scored(size)
        self.scored_counter.inc(size)
        out = dict(batch)
        out.update(stats)
        out["weight_version"] = np.full(size, self.weights.version, dtype=np.int64)
        return out

    def _score(self, model: nn.Module, head: nn.Module, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sc = self.cfg.scoring
        return self.task.score(model, head, batch, self.pad_id, self.device, sc.precision, sc.micro_batch_tokens,
                             self.columns)


def _counter(name: str, description: str):
    from ray.util.metrics import Counter

    return Counter(name, description=description)
