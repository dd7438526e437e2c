"""Evaluation on a held-out dev set (and the per-domain sets of `eval.sets`): tokenized once, batched by length,
scored with accuracy, loss, macro-F1 and balanced accuracy (a classifier) or perplexity, mean token loss and token
accuracy (a causal LM, `ol_ray.causal_lm.evaluate_lm`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ol_ray.config import Config
from ol_ray.models import autocast
from ol_ray.stream import FileSource, HubSource, SourceError
from ol_ray.tokenization import pad_batch, tokenize_rows
from ol_ray.validation import FieldSpec, split_records


@dataclass
class EvalSet:
    input_ids: list[np.ndarray]  # sorted by length, so each batch pads little
    labels: np.ndarray
    rows_rejected: int  # dev rows that failed validation (reported, never evaluated)
    target_masks: Optional[list[np.ndarray]] = None  # causal LM: the target tokens of each sample


def load_eval_set(cfg: Config) -> Optional[EvalSet]:
    """The configured dev set, validated like the stream and tokenized once; None when none is configured."""
    path = cfg.eval.path
    if not path:
        return None
    if os.path.exists(path):
        source = FileSource(path, cfg.stream)
    elif cfg.stream.hub_dataset:
        source = HubSource(cfg.stream, cfg.eval.hub_split)
    else:
        raise SourceError(f"eval.path {path} does not exist")
    return _tokenized(cfg, source, path, cfg.eval.skip, cfg.eval.max_samples)


def load_domain_sets(cfg: Config) -> dict[str, EvalSet]:
    """The evaluation sets of `eval.sets`, by name, each read with its own fields (`ol_ray.phases.domain_stream`)."""
    from ol_ray.phases import domain_stream

    sets = {}
    for domain in cfg.eval.sets:
        if not os.path.isfile(domain.path):
            raise SourceError(f"evaluation set {domain.name!r}: file {domain.path} does not exist")
        stream = domain_stream(cfg.stream, domain)
        sets[domain.name] = _tokenized(dataclasses.replace(cfg, stream=stream), FileSource(domain.path, stream),
                                       domain.path, domain.skip, domain.max_samples or cfg.eval.max_samples)
    return sets


def _tokenized(cfg: Config, source: Any, path: str, skip: int, max_samples: int) -> EvalSet:
    records = [record for record in source.records() if record is not None][skip:]
    if max_samples:
        records = records[:max_samples]
    good, bad = split_records([r.sample_id for r in records], [r.raw for r in records],
                              records[0].record_format if records else None, FieldSpec.from_config(cfg), window=-1)
    if not good:
        raise SourceError(f"the dev set {path} has no valid rows ({len(bad)} rejected)")
    columns, input_ids, masks, unusable = tokenize_rows(good, cfg)  # unusable: causal-LM rows with no target
    if not input_ids:
        raise SourceError(f"the dev set {path} has no row to evaluate on ({len(bad) + unusable} rejected)")
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    return EvalSet([input_ids[i] for i in order], columns["label"][order], len(bad) + unusable,
                   [masks[i] for i in order] if masks is not None else None)


@torch.no_grad()
def evaluate(model: nn.Module, eval_set: EvalSet, pad_id: int, device: torch.device, batch_size: int,
             precision: str = "fp32", max_tokens: int = 0) -> dict[str, float]:
    """Accuracy, mean cross-entropy and macro-F1 of a classifier on the dev set; perplexity, mean token loss and
    token accuracy of a causal LM (in batches of at most `max_tokens` padded tokens too)."""
    if eval_set.target_masks is not None:
        from ol_ray.causal_lm import evaluate_lm

        return evaluate_lm(model, eval_set.input_ids, eval_set.target_masks, pad_id, device, batch_size, precision,
                           max_tokens)
    was_training = model.training
    model.eval()
    predictions, losses = [], []
    for start in range(0, len(eval_set.labels), batch_size):
        batch = pad_batch(eval_set.input_ids[start:start + batch_size], pad_id, device)
        labels = torch.as_tensor(eval_set.labels[start:start + batch_size], device=device)
        with autocast(device, precision):
            logits = model(**batch).logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
        predictions.append(logits.argmax(dim=-1).cpu().numpy())
    model.train(was_training)
    predicted = np.concatenate(predictions)
    return {
        "accuracy": float((predicted == eval_set.labels).mean()),
        "loss": float(sum(losses) / len(eval_set.labels)),
        "macro_f1": macro_f1(eval_set.labels, predicted),
        "balanced_accuracy": balanced_accuracy(eval_set.labels, predicted),
    }


def headline(record: dict[str, Any]) -> tuple[str, Optional[float]]:
    """The evaluation figure a run is judged by, as (key, value) of an eval record or summary: dev accuracy for a
    classifier, dev perplexity for a causal LM (value None before any evaluation)."""
    if record.get("dev_perplexity") is not None:
        return "dev_perplexity", record["dev_perplexity"]
    return "dev_accuracy", record.get("dev_accuracy")


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for cls in np.union1d(labels, predicted):
        true_pos = np.sum((predicted == cls) & (labels == cls))
        denominator = np.sum(predicted == cls) + np.sum(labels == cls)
        scores.append(2 * true_pos / denominator if denominator else 0.0)
    return float(np.mean(scores))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-class recall over the classes present in labels: accuracy that a majority class cannot inflate
    (the airline tweets are 80% negative)."""
    return float(np.mean([np.mean(predicted[labels == cls] == cls) for cls in np.unique(labels)]))
