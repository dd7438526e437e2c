"""Small SST-2 inputs for tests: rows of the real data set as a file laid out like SST-2, or as a learner's pool."""

from __future__ import annotations

import os

import numpy as np

from ol_ray.data.tokenization import tokenize_texts


def write_sst2_tsv(path: os.PathLike, rows: list[list[str]], tail: str = "") -> str:
    """`sentence<TAB>label` with a header, one line per row, then `tail` (bad lines a test wants); returns the path."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows) + tail)
    return str(path)


def candidates(tiny_model_dir, rows, start, size, version=0, window=0, ids=None):
    """Rows `start` to `start + size` as the columns a learner receives (tokenized, unscored)."""
    input_ids, _ = tokenize_texts([row[0] for row in rows[start:start + size]], tiny_model_dir, 64)
    packed = np.empty(size, dtype=object)
    packed[:] = input_ids
    ids = ids or [f"s{i}" for i in range(start, start + size)]
    return {"sample_id": np.array(ids, dtype=object),
            "input_ids": packed, "label": np.array([int(row[1]) for row in rows[start:start + size]]),
            "weight_version": np.full(size, version, dtype=np.int64), "text_truncated": np.zeros(size, dtype=bool),
            "tokens_truncated": np.zeros(size, dtype=bool), "window": np.full(size, window, dtype=np.int64)}


def lm_candidates(model_dir, texts, start=0, window=0):
    """Texts as the columns a causal-LM learner receives (tokenized with target masks, unscored)."""
    from ol_ray.data.tokenization import object_column, tokenize_lm

    size = len(texts)
    input_ids, _, masks, _ = tokenize_lm(texts, [""] * size, [""] * size, model_dir, 64)
    return {"sample_id": np.array([f"t{i}" for i in range(start, start + size)], dtype=object),
            "input_ids": object_column(input_ids), "target_mask": object_column(masks),
            "label": np.zeros(size, dtype=np.int64), "weight_version": np.zeros(size, dtype=np.int64),
            "window": np.full(size, window, dtype=np.int64)}


POSITIVE = ("good", "great", "moving", "funny", "charming", "brilliant", "warm", "clever")
NEGATIVE = ("bad", "dull", "boring", "flat", "tedious", "clumsy", "lifeless", "silly")
FILLER = ("the", "film", "movie", "story", "cast", "director", "script", "a", "and", "its", "with", "of", "is",
          "this", "plot", "ending", "performance", "scenes", "dialogue", "it", "feels", "very", "quite", "often",
          "music", "characters", "camera", "first", "hour", "in", "by", "an", "actors", "but", "too", "than", "ever")


def generated_rows(count: int = 3000, seed: int = 0) -> list[list[str]]:
    """SST-2-like [sentence, label] rows made here, for when the real data is absent: review-like sequences of 3 to
    11 words, positive as often as SST-2's rows are (56%), labelled by the polarity of their 2 to 4 sentiment words
    (8 a class, so each is seen often; one of the other polarity sometimes joins, as in real reviews), seeded."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        label = int(rng.random() < 0.56)  # SST-2's share of positive rows
        own, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = list(rng.choice(FILLER, size=int(rng.integers(1, 7))))
        words += list(rng.choice(own, size=int(rng.integers(2, 5))))
        if rng.random() < 0.15:
            words.append(str(rng.choice(other)))
        rng.shuffle(words)
        rows.append([" ".join(words), str(label)])
    return rows
