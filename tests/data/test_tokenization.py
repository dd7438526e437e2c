import json

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import length_groups, pad_batch, tokenize_lm, tokenize_texts
from ol_ray.models.loading import load_tokenizer
from ol_ray.tasks.tokenize import tokenize_batch


def test_tokenize_truncates_and_flags(tiny_model_dir):
    ids, truncated = tokenize_texts(["a good film", "film " * 100], tiny_model_dir, max_length=16)
    assert len(ids) == 2 and ids[0].dtype == np.int32
    assert len(ids[1]) == 16 and list(truncated) == [False, True]
    assert len(ids[0]) < 16


def test_tokenize_batch_replaces_text(tiny_model_dir):
    batch = {"sample_id": np.array(["a", "b"], dtype=object), "text": np.array(["good", "bad"], dtype=object),
             "label": np.array([1, 0])}
    out = tokenize_batch(batch, ModelConfig(name_or_path=tiny_model_dir, max_length=16))
    assert "text" not in out and out["input_ids"].shape == (2,) and out["tokens_truncated"].dtype == bool


def test_pad_batch_masks_padding():
    out = pad_batch([np.array([5, 6, 7]), np.array([8])], pad_id=0, device=torch.device("cpu"))
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("budget", [0, 8, 32, 100])
def test_length_groups_cover_every_sample_once_within_budget(budget):
    lengths = list(np.random.default_rng(0).integers(1, 30, size=40))
    groups = length_groups(lengths, budget)
    positions = np.concatenate(groups)
    assert sorted(positions.tolist()) == list(range(40))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert budget == 0 or len(group) * longest <= budget or len(group) == 1


def test_length_groups_reduce_padding():
    lengths = [3] * 30 + [40] * 2
    padded = lambda groups: sum(len(g) * max(lengths[i] for i in g) for g in groups)  # noqa: E731
    assert padded(length_groups(lengths, 128)) < padded(length_groups(lengths, 0)) / 3


def test_a_response_is_the_only_target_and_ends_with_eos(tiny_gpt2_dir, tiny_llama_dir):
    for folder, start in ((tiny_gpt2_dir, []), (tiny_llama_dir, [2])):  # the Llama tokenizer adds <s>
        ids, cut, masks, _ = tokenize_lm(["the mat ."], ["the cat sat on"], [""], folder, 64)
        prompt = tokenize_lm(["the cat sat on"], [""], [""], folder, 64)[0][0][len(start):]
        response = tokenize_lm(["the mat ."], [""], [""], folder, 64)[0][0][len(start):]
        assert ids[0].tolist() == start + prompt.tolist() + response.tolist() + [3]  # 3: </s>
        assert masks[0].tolist() == [0] * (len(start) + len(prompt)) + [1] * (len(response) + 1)
        assert not cut[0]
        text_ids, _, text_masks, _ = tokenize_lm(["the cat sat"], [""], [""], folder, 64)
        assert text_masks[0].tolist() == [0] * len(start) + [1, 1, 1]  # a text is all targets, no EOS added


def test_chats_learn_the_assistant_turns_through_the_chat_template(tiny_llama_dir):
    chat = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on"},
            {"role": "user", "content": "a dog"}, {"role": "assistant", "content": "ran"}]
    ids, _, masks, _ = tokenize_lm([""], [""], [json.dumps(chat)], tiny_llama_dir, 64)
    tokenizer = load_tokenizer(tiny_llama_dir)
    whole = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == whole  # the pieces tokenize to the whole rendering, no <s> added to the template's
    targets = tokenizer.decode([t for t, m in zip(ids[0], masks[0]) if m])
    assert targets == "sat on <|im_end|> ran <|im_end|>"
    as_prompt, _, prompt_masks, _ = tokenize_lm(["sat on"], ["the cat"], [""], tiny_llama_dir, 64, chat_template=True)
    first_turns = tokenize_lm([""], [""], [json.dumps(chat[:2])], tiny_llama_dir, 64)
    assert as_prompt[0].tolist() == first_turns[0][0].tolist() and prompt_masks[0].sum() == 3


def test_a_long_prompt_loses_only_what_is_over_and_keeps_its_opening(tiny_gpt2_dir, tiny_llama_dir):
    prompt = " ".join(["the cat sat on the mat ."] * 4)  # 28 tokens
    long_response = " ".join(["a dog ran in the park ."] * 3)  # 21 tokens
    ids, cut, masks, _ = tokenize_lm(["a dog ran", long_response], [prompt, prompt], ["", ""], tiny_gpt2_dir, 16)
    assert cut.tolist() == [True, True] and [len(i) for i in ids] == [16, 16]
    assert masks[0].tolist() == [0] * 12 + [1] * 4  # 32 tokens: the prompt's first 16 go, its last 12 stay
    assert ids[0][-4:].tolist() == tokenize_lm(["a dog ran"], ["x"], [""], tiny_gpt2_dir, 16)[0][0][-4:].tolist()
    assert masks[1].tolist() == [0] * 8 + [1] * 8  # the prompt keeps half of max_length, the response the rest
    llama_ids, _, llama_masks, _ = tokenize_lm(["a dog ran"], [prompt], [""], tiny_llama_dir, 16)
    assert llama_ids[0][0] == 2 and llama_masks[0].tolist() == [0] * 12 + [1] * 4  # <s> kept, 11 prompt tokens


def test_tokenize_batch_of_a_causal_lm_adds_target_masks(tiny_gpt2_dir):
    batch = {"sample_id": np.array(["a", "b"], dtype=object), "text": np.array(["the mat", "a dog"], dtype=object),
             "prompt": np.array(["the cat", ""], dtype=object), "messages": np.array(["", ""], dtype=object),
             "label": np.array([0, 0])}
    out = tokenize_batch(batch, ModelConfig(name_or_path=tiny_gpt2_dir, kind="causal_lm", max_length=16))
    assert not {"text", "prompt", "messages"} & set(out)
    assert [m.tolist() for m in out["target_mask"]] == [[0, 0, 1, 1, 1], [1, 1]]


def test_a_template_that_rewrites_earlier_turns_learns_the_last_one_and_a_failing_one_is_a_row_error(tiny_llama_dir):
    from transformers import AutoTokenizer

    from ol_ray.data.tokenization import chat_segments
    from ol_ray.data.validation import RowError

    chat = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on"},
            {"role": "user", "content": "a dog"}, {"role": "assistant", "content": "ran"}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = (  # like templates that drop earlier reasoning: past assistant turns lose content
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|im_start|>assistant<|im_end|>"
        "{% else %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")
    pieces = chat_segments(chat, tokenizer)
    assert [piece for piece, target in pieces if target] == [" ran<|im_end|>"]
    assert "".join(piece for piece, _ in pieces) == tokenizer.apply_chat_template(chat, tokenize=False)
    tokenizer.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(RowError, match="must alternate") as error:
        chat_segments(chat, tokenizer)
    assert error.value.code == "bad_messages"


def test_rows_without_a_target_token_are_rejected_with_a_reason(tiny_gpt2_dir):
    ids, _, masks, rejected = tokenize_lm(["cat", "the cat sat", "sat"], ["", "", "the cat"], ["", "", ""],
                                          tiny_gpt2_dir, 64)
    assert [error.code if error else None for error in rejected] == ["no_targets", None, None]
    assert len(ids[0]) == 0 and len(masks[0]) == 0 and len(ids[1]) == 3  # GPT-2 adds no <s>: one token, no target
