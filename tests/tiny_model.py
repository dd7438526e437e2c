"""Tiny models built offline: a BERT classifier with a word-level tokenizer from SST-2 words, and GPT-2 and Llama
causal LMs with a word-level tokenizer (and a chat template) from a few sentences."""

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


# a repetitive little language: what a tiny causal LM can learn in a few hundred samples
LM_SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "birds sing in the morning .",
                "the sun is warm today .", "we read a good book ."]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")
LM_SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def build_tiny_causal_lm(folder: str, texts: list[str], architecture: str = "gpt2", vocab_size: int = 1000) -> str:
    """Save a tiny causal LM (GPT-2 or Llama: 2 layers, hidden 32) and a word-level tokenizer made offline from
    `texts` (one token per word or punctuation mark; a chat template; the Llama one adds <s> like Llama's own).
    Returns the folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    os.makedirs(folder, exist_ok=True)
    splitter = pre_tokenizers.Whitespace()
    counts = collections.Counter(piece for text in texts for piece, _ in splitter.pre_tokenize_str(text.lower()))
    roles = ["system", "user", "assistant"]
    words = [word for word, _ in counts.most_common(vocab_size) if word not in roles]
    words = (roles + words)[: vocab_size - len(LM_SPECIAL_TOKENS)]
    vocab = {token: index for index, token in enumerate(LM_SPECIAL_TOKENS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = splitter
    if architecture == "llama":
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>" if architecture == "llama" else None,
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    size = len(vocab)
    if architecture == "llama":
        config = LlamaConfig(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                             bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(folder)
    else:
        config = GPT2Config(vocab_size=size, n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=2,
                            eos_token_id=3)
        GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
