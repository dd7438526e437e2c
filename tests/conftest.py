"""Shared fixtures: a tiny BERT built offline, small slices of the real data, and a module-scoped local Ray."""

from __future__ import annotations

import csv
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tiny_model import LM_SENTENCES, build_tiny_causal_lm, build_tiny_model  # noqa: E402



def find_shared_data() -> str:
    """`shared/data` beside the project, or beside any folder above it (CI may clone the project one level deeper)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while True:
        parent = os.path.dirname(folder)
        candidate = os.path.join(parent, "shared", "data")
        if os.path.isdir(candidate) or parent == folder:
            return candidate
        folder = parent


DATA = find_shared_data()
SST2_TRAIN = os.path.join(DATA, "sst2", "train.tsv")
SST2_DEV = os.path.join(DATA, "sst2", "dev.tsv")


def read_tsv(path: str, limit: int) -> list[list[str]]:
    """The first `limit` data rows of a TSV file (SST-2 is read with quoting disabled)."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [row for _, row in zip(range(limit), reader)]


@pytest.fixture(scope="session")
def sst2_rows() -> list[list[str]]:
    if not os.path.exists(SST2_TRAIN):
        pytest.skip(f"SST-2 not found at {SST2_TRAIN}")
    return read_tsv(SST2_TRAIN, 3000)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sst2_rows) -> str:
    """A 2-layer, hidden-32 BERT classifier with a word-level tokenizer from SST-2 words; nothing downloaded."""
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-bert")), [row[0] for row in sst2_rows])


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 GPT-2 with a word-level tokenizer (no BOS, no pad) made offline."""
    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("tiny-gpt2")), LM_SENTENCES, "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 Llama (grouped-query attention, tied embeddings) whose tokenizer adds <s>."""
    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("tiny-llama")), LM_SENTENCES, "llama")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs and a capped object store, shut down after the module."""
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()
