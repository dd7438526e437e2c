"""Tokenization, done once per sample in a Ray Data stage, and the dynamic padding every consumer shares.

Samples travel as variable-length token-id arrays; scorer, learner and evaluation pad each batch only to its own
longest sample. Causal-LM samples also carry a `target_mask` (uint8 per token): 1 where the token is a training
target (the whole text; only the response of a prompt/response row; the assistant turns of a chat), 0 elsewhere.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Optional, Sequence

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


Segment = tuple[str, bool]  # a piece of text and whether its tokens are targets


def chat_segments(messages: list[dict[str, str]], tokenizer: Any) -> list[Segment]:
    """A chat as text pieces, the assistant turns' pieces marked as targets. With a chat template, the template
    rendered after each turn gives the pieces (the text a turn adds to the rendering before it); without one, the
    turns are written `role: content` one per line."""
    if not getattr(tokenizer, "chat_template", None):
        pieces: list[Segment] = []
        for message in messages:
            if message["role"] == "assistant":
                pieces += [("assistant: ", False), (message["content"] + "\n", True)]
            else:
                pieces.append((f"{message['role']}: {message['content']}\n", False))
        return pieces

    def render(turns: list[dict[str, str]], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)

    pieces, done = [], ""
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head, full = render(messages[:position], True) if position else "", render(messages[:position + 1])
        if not (head.startswith(done) and full.startswith(head)):  # a template that rewrites earlier turns
            return [(render(messages), True)]
        pieces += [(head[len(done):], False), (full[len(head):], True)]
        done = full
    rest = render(messages)[len(done):]
    return pieces + ([(rest, False)] if rest else [])


def lm_segments(text: str, prompt: str, messages: str, tokenizer: Any, chat_template: bool) -> list[Segment]:
    """The pieces of one causal-LM row: a chat, a prompt and its response (as a chat with `chat_template`, else
    the prompt, a newline unless it ends in white space, and the response), or a text, all targets."""
    if messages:
        return chat_segments(json.loads(messages), tokenizer)
    if prompt and chat_template:
        return chat_segments([{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                             tokenizer)
    if prompt:
        return [(prompt if prompt[-1].isspace() else prompt + "\n", False), (text, True)]
    return [(text, True)]


@functools.lru_cache(maxsize=4)
def _added_tokens(name_or_path: str, trust_remote_code: bool) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer adds before and after a text (a BOS for Llama, none for GPT-2)."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
    return list(full[:start]), list(full[start + len(plain):])


def tokenize_lm(texts: Sequence[str], prompts: Sequence[str], messages: Sequence[str], name_or_path: str,
                max_length: int, chat_template: bool = False,
                trust_remote_code: bool = False) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Causal-LM rows as token ids, whether each was cut at `max_length`, and target masks. The tokenizer's own
    special tokens wrap plain rows; a prompt/response row outside a chat template ends with EOS, a target (so the
    model learns where a response stops). A row over `max_length` loses its end; when its prompt fills more than
    half of `max_length`, the prompt's start goes first, so that every row keeps targets to learn."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    before, after = _added_tokens(name_or_path, trust_remote_code)
    rows = [lm_segments(t, p, m, tokenizer, chat_template) for t, p, m in zip(texts, prompts, messages)]
    flat = [piece for row in rows for piece, _ in row]
    encoded = tokenizer(flat, add_special_tokens=False, return_attention_mask=False)["input_ids"] if flat else []
    input_ids, masks, truncated = [], [], np.zeros(len(rows), dtype=bool)
    position = 0
    for row_index, (row, prompt, chat) in enumerate(zip(rows, prompts, messages)):
        # a chat template writes its own special tokens
        in_template = bool(getattr(tokenizer, "chat_template", None)) and bool(chat or (prompt and chat_template))
        ids, mask = ([], []) if in_template else (list(before), [0] * len(before))
        for _, target in row:
            ids += encoded[position]
            mask += [int(target)] * len(encoded[position])
            position += 1
        if not in_template:  # a response ends with EOS, a target; a text with the tokenizer's own closing tokens
            end = ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []) if prompt else after
            ids, mask = ids + end, mask + [1 if prompt else 0] * len(end)
        if len(ids) > max_length:
            truncated[row_index] = True
            first_target = mask.index(1) if 1 in mask else 0
            drop = max(0, first_target - max_length // 2)
            ids, mask = ids[drop:drop + max_length], mask[drop:drop + max_length]
        input_ids.append(np.asarray(ids, dtype=np.int32))
        masks.append(np.asarray(mask, dtype=np.uint8))
    return input_ids, truncated, masks


def object_column(items: Sequence[Any]) -> np.ndarray:
    """A 1-d numpy object array holding `items` (arrays stay whole, not a 2-d array)."""
    column = np.empty(len(items), dtype=object)
    column[:] = list(items)
    return column


def tokenize_columns(columns: dict[str, np.ndarray], model: Any,
                     chat_template: bool = False) -> tuple[list[np.ndarray], np.ndarray, Optional[list[np.ndarray]]]:
    """The validated rows' token ids, truncation flags and (causal LM) target masks, for a `ModelConfig`."""
    if model.kind == "causal_lm":
        return tokenize_lm(columns["text"], columns["prompt"], columns["messages"], model.name_or_path,
                           model.max_length, chat_template, model.trust_remote_code)
    input_ids, truncated = tokenize_texts(columns["text"], model.name_or_path, model.max_length,
                                          model.trust_remote_code)
    return input_ids, truncated, None


def tokenize_batch(batch: dict[str, np.ndarray], model: Any, chat_template: bool = False) -> dict[str, np.ndarray]:
    """Ray Data stage: replace the text columns by `input_ids` (and, causal LM, `target_mask`), and count texts cut
    at `max_length` in `tokens_truncated`."""
    input_ids, truncated, masks = tokenize_columns(batch, model, chat_template)
    out = {key: value for key, value in batch.items() if key not in ("text", "prompt", "messages")}
    out["input_ids"] = object_column(input_ids)
    if masks is not None:
        out["target_mask"] = object_column(masks)
    out["tokens_truncated"] = truncated
    return out


def pad_masks(masks: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Target masks padded with 0 to the longest, as a bool tensor (the same shape as `pad_batch`'s input_ids)."""
    longest = max(len(mask) for mask in masks)
    padded = np.zeros((len(masks), longest), dtype=bool)
    for row, mask in enumerate(masks):
        padded[row, : len(mask)] = mask.astype(bool)
    return torch.from_numpy(padded).to(device)


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
