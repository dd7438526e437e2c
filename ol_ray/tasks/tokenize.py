"""Validated rows to token ids for a model config, by its task: the scorers' tokenize stage (rows that cannot train go
to the quarantine sink) and rows read outside Ray (a dev set, the rho_loss holdout)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ol_ray.data.tokenization import object_column, rejected_record
from ol_ray.data.validation import RowError, rows_to_columns
from ol_ray.tasks.base import task_for


def tokenize_columns(columns: dict[str, np.ndarray], model: Any, chat_template: bool = False
                     ) -> tuple[list[np.ndarray], np.ndarray, Optional[list[np.ndarray]], list[tuple[int, RowError]]]:
    """The validated rows' token ids, truncation flags, (causal LM) target masks, and the (position, RowError) of
    rows that cannot train (their ids are empty), for a `ModelConfig`: its task's tokenization."""
    return task_for(model.kind).tokenize(columns, model, chat_template)


def tokenize_rows(rows: Sequence[Any], cfg: Any) -> tuple[dict[str, np.ndarray], list[np.ndarray],
                                                          Optional[list[np.ndarray]], int]:
    """Validated rows outside Ray (a dev set, the rho_loss holdout) tokenized for a `Config`, rows that cannot train
    left out: their columns, token ids, target masks (causal LM) and how many were left out."""
    columns = rows_to_columns(list(rows), -1, causal_lm=not task_for(cfg.model.kind).labelled)
    input_ids, _, masks, rejected = tokenize_columns(columns, cfg.model, cfg.stream.chat_template)
    keep = np.setdiff1d(np.arange(len(input_ids)), [position for position, _ in rejected]).astype(np.int64)
    return ({key: value[keep] for key, value in columns.items()}, [input_ids[i] for i in keep],
            None if masks is None else [masks[i] for i in keep], len(rejected))


def tokenize_batch(batch: dict[str, np.ndarray], model: Any, chat_template: bool = False,
                   quarantine: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> dict[str, np.ndarray]:
    """The scorers' tokenize stage: replace the text columns by `input_ids` (and, causal LM, `target_mask`), and
    count texts cut at `max_length` in `tokens_truncated`. Rows that cannot train (a chat its template rejects, no
    target token) go to `quarantine` (a function writing quarantine records), as validation's rejects do."""
    input_ids, truncated, masks, rejected = tokenize_columns(batch, model, chat_template)
    out = {key: value for key, value in batch.items() if key not in ("text", "prompt", "messages")}
    out["input_ids"] = object_column(input_ids)
    if masks is not None:
        out["target_mask"] = object_column(masks)
    out["tokens_truncated"] = truncated
    if not rejected:
        return out
    if quarantine is None:
        raise RuntimeError(f"{len(rejected)} rows cannot train and no quarantine sink takes them")
    quarantine([rejected_record(batch, position, error) for position, error in rejected])
    keep = np.setdiff1d(np.arange(len(input_ids)), [position for position, _ in rejected])
    return {key: value[keep] for key, value in out.items()}
