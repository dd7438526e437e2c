"""A tiny BERT classifier (2 layers, hidden 32) with a word-level tokenizer built offline from SST-2 words."""

from __future__ import annotations

import collections
import os

import torch

from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_model(folder: str, texts: list[str], num_labels: int = 2, vocab_size: int = 2000) -> str:
    """Save a tiny BERT and its tokenizer to `folder` (from_pretrained loads it); returns the folder."""
    torch.manual_seed(0)  # the same tiny model in every session
    os.makedirs(folder, exist_ok=True)
    counts = collections.Counter(word for text in texts for word in text.lower().split())
    words = [word for word, _ in counts.most_common(vocab_size - len(SPECIAL_TOKENS))]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + words)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    assert tokenizer("the film")["input_ids"] == [2, vocab["the"], vocab["film"], 3], "the tokenizer lost its vocab"
    config = BertConfig(vocab_size=len(SPECIAL_TOKENS) + len(words), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=num_labels, pad_token_id=0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder
