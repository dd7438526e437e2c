"""Scoring: per-sample statistics with the newest weights a scorer has, tagged with their weight version.

`score_samples` is the plain math (callable without Ray): one forward pass gives, per sample, the loss, predictive
entropy, margin, max probability, predicted label, the last-layer gradient norm in closed form and a mean-pooled
embedding. `Scorer` is the Ray Data callable class (`map_batches(Scorer, compute=ActorPoolStrategy(...))`) around it:
before each batch it asks the weight store for the newest version and pulls weights only when they are newer.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np
import ray
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.config import Config
from ol_ray.models import autocast, device_for, head_layer, load_model, load_tokenizer
from ol_ray.tokenization import length_groups, pad_batch
from ol_ray.weights import WeightClient

STAT_COLUMNS = ("loss", "entropy", "margin", "max_prob", "predicted", "grad_norm", "embedding")


@torch.no_grad()
def score_samples(model: nn.Module, head: nn.Linear, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                  pad_id: int, device: torch.device, precision: str = "fp32",
                  micro_batch_tokens: int = 0) -> dict[str, np.ndarray]:
    """Per-sample statistics of one batch (numpy arrays, one row per sample, in input order), computed over
    length-sorted micro-batches of at most `micro_batch_tokens` padded tokens.

    grad_norm is the norm of the cross-entropy gradient with respect to the head layer's weight and bias:
    dL/dW = (p - y) h^T and dL/db = p - y, so its norm is |p - y| * sqrt(|h|^2 + 1), with h the head's input.
    """
    out = {name: np.zeros(len(input_ids), dtype=np.float32) for name in STAT_COLUMNS}
    out["predicted"] = np.zeros(len(input_ids), dtype=np.int64)
    out["embedding"] = np.zeros((len(input_ids), model.config.hidden_size), dtype=np.float32)
    model.eval()
    for group in length_groups([len(ids) for ids in input_ids], micro_batch_tokens):
        if len(group) == 0:
            continue
        stats = _score_group(model, head, [input_ids[i] for i in group], labels[group], pad_id, device, precision)
        for name, values in stats.items():
            out[name][group] = values
    return out


def _score_group(model: nn.Module, head: nn.Linear, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                 pad_id: int, device: torch.device, precision: str) -> dict[str, np.ndarray]:
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0]))
    try:
        batch = pad_batch(input_ids, pad_id, device)
        with autocast(device, precision):
            out = model(**batch, output_hidden_states=True)
    finally:
        hook.remove()
    logits = out.logits.float()
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    top2 = probs.topk(2, dim=-1).values
    features = captured["h"].float()
    if features.dim() == 3:  # a head applied per position (decoder classifiers): use the last real token
        last = batch["attention_mask"].sum(dim=1) - 1
        features = features[torch.arange(len(last), device=device), last]
    error = probs - F.one_hot(target, logits.shape[-1]).float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    hidden = out.hidden_states[-1].float()
    stats = {
        "loss": F.nll_loss(log_probs, target, reduction="none"),
        "entropy": -(probs * log_probs).sum(dim=-1),
        "margin": top2[:, 0] - top2[:, 1],
        "max_prob": top2[:, 0],
        "predicted": logits.argmax(dim=-1),
        "grad_norm": error.norm(dim=-1) * torch.sqrt(features.pow(2).sum(dim=-1) + 1.0),
        "embedding": (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0),
    }
    return {name: value.cpu().numpy() for name, value in stats.items()}


class Scorer:
    """Ray Data actor: scores batches of tokenized samples with the newest published weights."""

    def __init__(self, cfg: Config, weight_store: Any, monitor: Any = None):
        torch.set_num_threads(cfg.scoring.torch_threads)
        self.cfg = cfg
        self.device = device_for(cfg.scoring.num_gpus)
        self.model = load_model(cfg.model, pretrained=False).to(self.device)
        self.head = head_layer(self.model, cfg.model.num_labels)
        self.pad_id = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code).pad_token_id or 0
        self.weights = WeightClient(weight_store)
        # a new or restarted scorer starts from the newest weights
        self.weights.refresh(self.model, wait=True, timeout_s=cfg.learner.start_timeout_s)
        self.monitor = monitor
        self.node_id = ray.get_runtime_context().get_node_id()
        self.scored_counter = _counter("ol_ray_samples_scored", "Samples scored by ol_ray scorers.")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = len(batch["sample_id"])
        self.weights.refresh(self.model)
        started = time.perf_counter()
        stats = score_samples(self.model, self.head, batch["input_ids"], batch["label"], self.pad_id, self.device,
                              self.cfg.scoring.precision, self.cfg.scoring.micro_batch_tokens)
        elapsed = time.perf_counter() - started
        self.weights.scored(size)
        self.scored_counter.inc(size)
        if self.monitor is not None:
            self.monitor.report.remote("scorer", {"samples": size, "seconds": elapsed, "pid": os.getpid(),
                                                  "node_id": self.node_id})
        out = dict(batch)
        out.update(stats)
        out["weight_version"] = np.full(size, self.weights.version, dtype=np.int64)
        return out


def _counter(name: str, description: str):
    from ray.util.metrics import Counter

    return Counter(name, description=description)
