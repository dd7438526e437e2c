"""Tokenization, done once per sample in a Ray Data stage, and the dynamic padding every consumer shares.

Samples travel as variable-length token-id arrays; scorer, learner and evaluation pad each batch only to its own
longest sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ol_ray.models import load_tokenizer


def tokenize_texts(texts: Sequence[str], name_or_path: str, max_length: int,
                   trust_remote_code: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids (int32 arrays, with special tokens, cut to `max_length`) and whether each text was cut."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    if not tokenizer.is_fast:  # slow tokenizers cannot report overflow: compare with the uncut length
        full = tokenizer(list(texts), truncation=False, return_attention_mask=False)["input_ids"]
        cut = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False)["input_ids"]
        return [np.asarray(ids, dtype=np.int32) for ids in cut], np.array([len(f) > len(c) for f, c in zip(full, cut)])
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_overflowing_tokens=True,
                        return_attention_mask=False)
    input_ids: list[np.ndarray] = []
    truncated = np.zeros(len(texts), dtype=bool)
    last = -1
    for ids, owner in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"]):
        if owner == last:  # an overflow piece: the text was longer than max_length
            truncated[owner] = True
            continue
        input_ids.append(np.asarray(ids, dtype=np.int32))
        last = owner
    return input_ids, truncated


def tokenize_batch(batch: dict[str, np.ndarray], name_or_path: str, max_length: int,
                   trust_remote_code: bool = False) -> dict[str, np.ndarray]:
    """Ray Data stage: replace `text` by `input_ids`, and count texts cut at `max_length` in `tokens_truncated`."""
    input_ids, truncated = tokenize_texts(batch["text"], name_or_path, max_length, trust_remote_code)
    out = {key: value for key, value in batch.items() if key != "text"}
    out["input_ids"] = np.array(input_ids + [None], dtype=object)[:-1]  # keep a 1-d object array of arrays
    out["tokens_truncated"] = truncated
    return out


def pad_batch(input_ids: Sequence[np.ndarray], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad to the longest sample: `input_ids` and `attention_mask` tensors on `device`."""
    longest = max(len(ids) for ids in input_ids)
    ids = np.full((len(input_ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(input_ids), longest), dtype=np.int64)
    for row, sample in enumerate(input_ids):
        ids[row, : len(sample)] = sample
        mask[row, : len(sample)] = 1
    return {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}


def length_groups(lengths: Sequence[int], max_tokens: int, max_samples: int = 0) -> list[np.ndarray]:
    """Split sample positions into micro-batches of similar length, each padding to at most `max_tokens` tokens
    (count x longest; a sample longer than the budget gets a group of its own) and holding at most `max_samples`
    samples (0: no limit). Padding a random batch to its longest sample wastes most of the compute on short-text
    streams; grouping by length recovers it. With neither limit: one group in the original order."""
    if (max_tokens <= 0 and max_samples <= 0) or len(lengths) == 0:
        return [np.arange(len(lengths))]
    order = np.argsort(np.asarray(lengths), kind="stable") if max_tokens > 0 else np.arange(len(lengths))
    groups: list[list[int]] = [[]]
    for position in order:
        longest = lengths[position]  # ascending, so the newest sample is the group's longest
        over_tokens = max_tokens > 0 and (len(groups[-1]) + 1) * longest > max_tokens
        over_samples = max_samples > 0 and len(groups[-1]) >= max_samples
        if groups[-1] and (over_tokens or over_samples):
            groups.append([])
        groups[-1].append(int(position))
    return [np.asarray(group, dtype=np.int64) for group in groups]
