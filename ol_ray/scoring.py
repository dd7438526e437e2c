"""Scoring: per-sample statistics with the newest weights a scorer has, tagged with their weight version.

`score_samples` is the plain math (callable without Ray): one forward pass gives, per sample, the loss, predictive
entropy, margin, max probability, predicted label, class probabilities, the head's input features, the last-layer
gradient norm in closed form and a mean-pooled embedding; `exact_grad_norms` gives the whole model's per-sample
gradient norms with torch.func (vmap over grad) for small models; a causal LM's statistics come from
`ol_ray.causal_lm.score_lm_samples`. `Scorer` is the Ray Data callable class
(`map_batches(Scorer, compute=ActorPoolStrategy(...))`) around them: before each batch it asks the weight store for
the newest version and pulls weights only when they are newer.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import numpy as np
import ray
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.config import Config
from ol_ray.models import (autocast, device_for, load_model, load_numpy_state, load_tokenizer, output_layer,
                           pad_id_of)
from ol_ray.tokenization import length_groups, pad_batch
from ol_ray.weights import WeightClient

STAT_COLUMNS = ("loss", "entropy", "margin", "max_prob", "predicted", "grad_norm", "embedding", "probs", "features")


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
    out["probs"] = np.zeros((len(input_ids), head.out_features), dtype=np.float32)
    out["features"] = np.zeros((len(input_ids), head.in_features), dtype=np.float32)
    model.eval()
    for group in length_groups([len(ids) for ids in input_ids], micro_batch_tokens):
        if len(group) == 0:
            continue
        stats = _score_group(model, head, [input_ids[i] for i in group], labels[group], pad_id, device, precision)
        for name, values in stats.items():
            out[name][group] = values
    return out


def forward_with_head_input(model: nn.Module, head: nn.Module, input_ids: Sequence[np.ndarray], pad_id: int,
                            device: torch.device, precision: str) -> tuple[dict[str, torch.Tensor], Any, torch.Tensor]:
    """One padded forward pass with hidden states: the padded batch, the model's output, and the input of its
    output layer `head` (caught by a forward hook; the features whose norm gives the last-layer gradient norm)."""
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0]))
    try:
        batch = pad_batch(input_ids, pad_id, device)
        with autocast(device, precision):
            out = model(**batch, output_hidden_states=True)
    finally:
        hook.remove()
    return batch, out, captured["h"]


def _score_group(model: nn.Module, head: nn.Linear, input_ids: Sequence[np.ndarray], labels: np.ndarray,
                 pad_id: int, device: torch.device, precision: str) -> dict[str, np.ndarray]:
    batch, out, head_input = forward_with_head_input(model, head, input_ids, pad_id, device, precision)
    logits = out.logits.float()
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    top2 = probs.topk(2, dim=-1).values
    features = head_input.float()
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
        "probs": probs,
        "features": features,
    }
    return {name: value.cpu().numpy() for name, value in stats.items()}


def exact_grad_norms(model: nn.Module, input_ids: Sequence[np.ndarray], labels: np.ndarray, pad_id: int,
                     device: torch.device, chunk_size: int = 8) -> np.ndarray:
    """The norm of each sample's cross-entropy gradient over all trainable parameters, with torch.func:
    vmap(grad(loss of one sample)) in chunks of `chunk_size` samples (memory ~ chunk_size x parameters). Padding is
    an additive 4-D attention mask, so no data-dependent mask handling runs under vmap (encoder models)."""
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    batch = pad_batch(input_ids, pad_id, device)
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    blocked = torch.finfo(torch.float32).min

    def sample_loss(weights: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
                    label: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask.float())[None, None, None, :] * blocked
        logits = functional_call(model, (weights, buffers), args=(),
                                 kwargs={"input_ids": ids[None], "attention_mask": additive}).logits
        return F.cross_entropy(logits.float(), label[None])

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            grads = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0), chunk_size=chunk_size)(
                params, batch["input_ids"], batch["attention_mask"], target)
    finally:
        model.train(was_training)
    squared = sum(g.float().pow(2).flatten(1).sum(dim=1) for g in grads.values())
    return squared.sqrt().cpu().numpy().astype(np.float32)


class Scorer:
    """Ray Data actor: scores batches of tokenized samples with the newest published weights."""

    def __init__(self, cfg: Config, weight_store: Any, monitor: Any = None,
                 irreducible: Optional[dict[str, Any]] = None):
        torch.set_num_threads(cfg.scoring.torch_threads)
        self.cfg = cfg
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
        self.monitor = monitor
        self.node_id = ray.get_runtime_context().get_node_id()
        self.scored_counter = _counter("ol_ray_samples_scored", "Samples scored by ol_ray scorers.")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = len(batch["sample_id"])
        self.weights.refresh(self.model)
        started = time.perf_counter()
        stats = self._score(self.model, self.head, batch)
        if self.irreducible is not None:
            stats["irreducible_loss"] = self._score(self.irreducible, self.irreducible_head, batch)["loss"]
        if self.cfg.scoring.grad_norm == "exact":
            stats["grad_norm"] = exact_grad_norms(self.model, batch["input_ids"], batch["label"], self.pad_id,
                                                  self.device)
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


    def _score(self, model: nn.Module, head: nn.Module, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sc = self.cfg.scoring
        return score_columns(model, head, batch, self.pad_id, self.device, sc.precision, sc.micro_batch_tokens)


def score_columns(model: nn.Module, head: nn.Module, columns: dict[str, np.ndarray], pad_id: int,
                  device: torch.device, precision: str = "fp32", micro_batch_tokens: int = 0) -> dict[str, np.ndarray]:
    """The statistics of tokenized samples (columns input_ids and label, or target_mask for a causal LM): what a
    scorer adds to a batch, and what the learner recomputes for replayed samples."""
    if "target_mask" in columns:
        from ol_ray.causal_lm import score_lm_samples

        return score_lm_samples(model, head, columns["input_ids"], columns["target_mask"], pad_id, device, precision,
                                micro_batch_tokens)
    return score_samples(model, head, columns["input_ids"], columns["label"], pad_id, device, precision,
                         micro_batch_tokens)


def _counter(name: str, description: str):
    from ray.util.metrics import Counter

    return Counter(name, description=description)
