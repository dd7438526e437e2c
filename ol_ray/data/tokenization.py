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

from ol_ray.data.validation import RowError, quarantine_record
from ol_ray.models.loading import load_tokenizer


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
    rendered after each turn gives the pieces (the text a turn adds to the rendering before it); a template that
    renders earlier turns differently once later ones follow (some drop earlier reasoning) gets the last assistant
    turn as its only target. Without a template, the turns are written `role: content` one per line. Raises
    RowError when the template rejects the chat (strict templates check the order of roles)."""
    if not getattr(tokenizer, "chat_template", None):
        pieces: list[Segment] = []
        for message in messages:
            if message["role"] == "assistant":
                pieces += [("assistant: ", False), (message["content"] + "\n", True)]
            else:
                pieces.append((f"{message['role']}: {message['content']}\n", False))
        return pieces

    def render(turns: list[dict[str, str]], generation_prompt: bool = False) -> str:
        if not turns and not generation_prompt:
            return ""
        try:
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as error:  # jinja's TemplateError, or whatever a template raises
            raise RowError("bad_messages", f"the tokenizer's chat template rejects this chat: {error}") from None

    whole = render(messages)
    assistant_turns = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    pieces, done = [], ""
    for position in assistant_turns:
        head, full = render(messages[:position], True), render(messages[:position + 1])
        if not (head.startswith(done) and full.startswith(head) and whole.startswith(full)):
            break
        pieces += [(head[len(done):], False), (full[len(head):], True)]
        done = full
    else:
        return pieces + ([(whole[len(done):], False)] if len(whole) > len(done) else [])
    last = assistant_turns[-1]  # the turn-by-turn rendering is not a prefix chain: learn the last turn only
    head, full = render(messages[:last], True), render(messages[:last + 1])
    if not (full.startswith(head) and whole.startswith(full)):
        raise RowError("bad_messages", "the tokenizer's chat template does not render this chat's last assistant "
                                       "turn after the turns before it, so its tokens cannot be told apart")
    return [(head, False), (full[len(head):], True), (whole[len(full):], False)]


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


def _target_flags(tokenizer: Any, texts: list[str], pieces: list[list[Segment]]) -> tuple[list[list[int]],
                                                                                            list[list[int]]]:
    """Token ids of each row's whole text (its pieces joined, tokenized once, so the tokens are those the model
    sees at inference) and, per token, 1 when its last character lies in a target piece. A slow tokenizer (no
    character offsets) tokenizes piece by piece instead."""
    if not tokenizer.is_fast:
        ids, flags = [], []
        for row in pieces:
            encoded = [tokenizer(piece, add_special_tokens=False)["input_ids"] for piece, _ in row]
            ids.append([token for part in encoded for token in part])
            flags.append([int(target) for part, (_, target) in zip(encoded, row) for _ in part])
        return ids, flags
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
    flags = []
    for offsets, row in zip(encoded["offset_mapping"], pieces):
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        if not row or not len(spans):
            flags.append([0] * len(spans))
            continue
        last_char = np.maximum(spans[:, 1], spans[:, 0] + 1) - 1
        piece = np.searchsorted(np.cumsum([len(text) for text, _ in row]), last_char, side="right")
        targets = np.array([target for _, target in row], dtype=np.int64)
        flags.append(targets[np.minimum(piece, len(row) - 1)].tolist())
    return list(encoded["input_ids"]), flags


def tokenize_lm(texts: Sequence[str], prompts: Sequence[str], messages: Sequence[str], name_or_path: str,
                max_length: int, chat_template: bool = False,
                trust_remote_code: bool = False) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray],
                                                          list[Optional[RowError]]]:
    """Causal-LM rows as token ids, whether each was cut at `max_length`, target masks, and per row the RowError
    that keeps it from training (its chat template fails, or no target token is left), else None; a rejected
    row's ids and mask are empty. The tokenizer's own special tokens wrap plain rows; a prompt/response row outside
    a chat template ends with EOS, a target (so the model learns where a response stops). A row over `max_length`
    loses its end; when its prompt fills more than half of `max_length`, tokens of the prompt go first, those right
    after its opening (the BOS, or a template's first max_length / 8 tokens: system prompt and role header), so the
    row keeps the prompt's end and targets to learn."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    before, after = _added_tokens(name_or_path, trust_remote_code)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    rows: list[list[Segment]] = []
    rejected: list[Optional[RowError]] = []
    for text, prompt, chat in zip(texts, prompts, messages):
        try:
            rows.append(lm_segments(text, prompt, chat, tokenizer, chat_template))
            rejected.append(None)
        except RowError as error:
            rows.append([])
            rejected.append(error)
    all_ids, all_flags = _target_flags(tokenizer, ["".join(piece for piece, _ in row) for row in rows], rows)
    input_ids, masks, truncated = [], [], np.zeros(len(rows), dtype=bool)
    for index, (prompt, chat) in enumerate(zip(prompts, messages)):
        in_template = has_template and bool(chat or (prompt and chat_template))  # it writes its special tokens
        opening = [] if in_template else before
        ids, mask = opening + list(all_ids[index]), [0] * len(opening) + all_flags[index]
        if not in_template:  # a response ends with EOS, a target; a text with the tokenizer's own closing tokens
            end = ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []) if prompt else after
            ids, mask = ids + end, mask + [1 if prompt else 0] * len(end)
        if len(ids) > max_length:
            truncated[index] = True
            first_target = mask.index(1) if 1 in mask else 0
            keep = min(len(opening) if not in_template else max_length // 8, first_target)
            drop = min(max(0, first_target - max_length // 2), len(ids) - max_length)
            ids, mask = ids[:keep] + ids[keep + drop:], mask[:keep] + mask[keep + drop:]
            ids, mask = ids[:max_length], mask[:max_length]
        if rejected[index] is None and not any(mask[1:]):
            rejected[index] = RowError("no_targets", "no token to learn: the text is a single token, or nothing of "
                                                     "the response is left within model.max_length")
        if rejected[index] is not None:
            ids, mask = [], []
        input_ids.append(np.asarray(ids, dtype=np.int32))
        masks.append(np.asarray(mask, dtype=np.uint8))
    return input_ids, truncated, masks, rejected


def object_column(items: Sequence[Any]) -> np.ndarray:
    """A 1-d numpy object array holding `items` (arrays stay whole, not a 2-d array)."""
    column = np.empty(len(items), dtype=object)
    column[:] = list(items)
    return column








def rejected_record(columns: dict[str, np.ndarray], position: int, error: RowError) -> dict[str, Any]:
    """The quarantine record of a row rejected at tokenization: the row's text fields stand in for its raw bytes."""
    raw = {key: str(columns[key][position]) for key in ("prompt", "text", "messages")
           if key in columns and columns[key][position]}
    return quarantine_record(str(columns["sample_id"][position]), json.dumps(raw, ensure_ascii=False).encode(),
                             error, int(columns["window"][position]))


def ragged(column: np.ndarray) -> np.ndarray:
    """A token-id column as a 1-d object array of arrays: Ray Data hands a block whose arrays are all the same
    length (a one-row block, say) over as a 2-d array."""
    return object_column(list(column)) if column.ndim == 2 else column


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
