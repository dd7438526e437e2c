"""Evaluation on a held-out dev set (and the per-domain sets of `eval.sets`): tokenized once, batched by length,
scored with accuracy, loss, macro-F1 and balanced accuracy (a classifier) or perplexity, mean token loss and token
accuracy (a causal LM, `ol_ray.tasks.causal_lm.evaluate_lm`)."""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ol_ray.config.schema import Config
from ol_ray.data.files import FileSource
from ol_ray.data.hub import HubSource
from ol_ray.data.source import SourceError
from ol_ray.data.validation import FieldSpec, split_records
from ol_ray.tasks import task_for
from ol_ray.tasks.tokenize import tokenize_rows


@dataclass
class EvalSet:
    input_ids: list[np.ndarray]  # sorted by length, so each batch pads little
    labels: np.ndarray
    rows_rejected: int  # dev rows that failed validation (reported, never evaluated)
    kind: str  # the model.kind whose task evaluates the set
    target_masks: Optional[list[np.ndarray]] = None  # causal LM: the target tokens of each sample


def _dev_source(cfg: Config, local_only: bool = False) -> Optional[tuple[Config, Any, str, int, int]]:
    """(config, source, path, skip, max_samples) of the dev set; None when there is none (or, with `local_only`,
    when it would come from the hub)."""
    path = cfg.eval.path
    if not path:
        return None
    if os.path.exists(path):
        return cfg, FileSource(path, cfg.stream), path, cfg.eval.skip, cfg.eval.max_samples
    if not (cfg.stream.hub_dataset and cfg.stream.hub_fallback):
        raise SourceError(f"eval.path {path} does not exist")
    return None if local_only else (cfg, HubSource(cfg.stream, cfg.eval.hub_split), path, cfg.eval.skip,
                                    cfg.eval.max_samples)


def _domain_sources(cfg: Config) -> dict[str, tuple[Config, Any, str, int, int]]:
    """The same for every set of `eval.sets`, by name, each read with its own fields."""
    from ol_ray.data.phases import domain_stream

    found = {}
    for domain in cfg.eval.sets:
        if not os.path.isfile(domain.path):
            raise SourceError(f"evaluation set {domain.name!r}: file {domain.path} does not exist")
        stream = domain_stream(cfg.stream, domain)
        found[domain.name] = (dataclasses.replace(cfg, stream=stream), FileSource(domain.path, stream), domain.path,
                              domain.skip, domain.max_samples or cfg.eval.max_samples)
    return found


def load_eval_set(cfg: Config) -> Optional[EvalSet]:
    """The configured dev set, validated like the stream and tokenized once; None when none is configured."""
    dev = _dev_source(cfg)
    return _tokenized(*dev) if dev else None


def load_domain_sets(cfg: Config) -> dict[str, EvalSet]:
    """The evaluation sets of `eval.sets`, by name, each read with its own fields
    (`ol_ray.data.phases.domain_stream`)."""
    return {name: _tokenized(*entry) for name, entry in _domain_sources(cfg).items()}


def check_eval_sets(cfg: Config, rows: int = 256) -> None:
    """Before Ray starts: the first `rows` rows of the dev set and of every evaluation set parse with the fields
    the config gives them (a missing text or label field is named), else SourceError. A hub dev set is not read."""
    dev = _dev_source(cfg, local_only=True)
    for set_cfg, source, path, skip, _ in ([dev] if dev else []) + list(_domain_sources(cfg).values()):
        _valid_rows(set_cfg, source, path, skip, rows)


def _valid_rows(cfg: Config, source: Any, path: str, skip: int, max_samples: int) -> tuple[list, int]:
    """The valid rows of a set (after `skip`, at most `max_samples`; 0 = all) and how many were rejected; reads
    only as far as it keeps. No valid row is an error that says why the first row was rejected."""
    stop = skip + max_samples if max_samples else None
    records = list(itertools.islice((r for r in source.records() if r is not None), skip, stop))
    getattr(source, "close", lambda: None)()
    good, bad = split_records([r.sample_id for r in records], [r.raw for r in records],
                              records[0].record_format if records else None, FieldSpec.from_config(cfg), window=-1)
    if not good:
        why = f"; the first: {bad[0]['code']}: {bad[0]['reason']}" if bad else ""
        raise SourceError(f"the evaluation set {path} has no valid rows ({len(bad)} rejected{why}; its fields are "
                          f"read as text_field={cfg.stream.text_field!r}, label_field={cfg.stream.label_field!r})")
    return good, len(bad)


def _tokenized(cfg: Config, source: Any, path: str, skip: int, max_samples: int) -> EvalSet:
    good, rejected = _valid_rows(cfg, source, path, skip, max_samples)
    columns, input_ids, masks, unusable = tokenize_rows(good, cfg)  # unusable: causal-LM rows with no target
    if not input_ids:
        raise SourceError(f"the evaluation set {path} has no row to evaluate on ({rejected + unusable} rejected)")
    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    return EvalSet([input_ids[i] for i in order], columns["label"][order], rejected + unusable, cfg.model.kind,
                   [masks[i] for i in order] if masks is not None else None)


def evaluate(model: nn.Module, eval_set: EvalSet, pad_id: int, device: torch.device, batch_size: int,
             precision: str = "fp32", max_tokens: int = 0) -> dict[str, float]:
    """The set's held-out figures, as its task measures them (in batches of at most `max_tokens` padded tokens
    too, for a causal LM)."""
    return task_for(eval_set.kind).evaluate(model, eval_set.input_ids, eval_set.labels, eval_set.target_masks, pad_id,
                                            device, batch_size, precision, max_tokens)

def headline(record: dict[str, Any]) -> tuple[str, Optional[float]]:
    """The evaluation figure a run is judged by, as (key, value) of an eval record or summary: dev accuracy for a
    classifier, dev perplexity for a causal LM (value None before any evaluation)."""
    if record.get("dev_perplexity") is not None:
        return "dev_perplexity", record["dev_perplexity"]
    return "dev_accuracy", record.get("dev_accuracy")

def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean per-class recall over the classes present in labels: accuracy that a majority class cannot inflate
    (the airline tweets are 80% negative)."""
    return float(np.mean([np.mean(predicted[labels == cls] == cls) for cls in np.unique(labels)]))
