"""Shared fixtures: a tiny BERT built offline, small slices of the real data, and a module-scoped local Ray."""

from __future__ import annotations

import csv
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from data_files import generated_rows  # noqa: E402
from tiny_model import LM_SENTENCES, build_tiny_causal_lm, build_tiny_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project: configs/, jobs/, README.md


def find_shared_data() -> str:
    """The real data: $OL_RAY_DATA, else `shared/data` beside the project (its parent's `shared/data`), where it
    lies on the machines this project is built on. A clone elsewhere has none, and only the tests that need real
    data skip there."""
    return os.environ.get("OL_RAY_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")


DATA = find_shared_data()
SST2_TRAIN = os.path.join(DATA, "sst2", "train.tsv")
SST2_DEV = os.path.join(DATA, "sst2", "dev.tsv")
AIRLINE_TWEETS = os.path.join(DATA, "airline_tweets", "train.tsv")


def real_data(path: str) -> str:
    """`path` under the real data, or a skip that says it is absent (only tests that need real data ask)."""
    if not os.path.exists(path):
        pytest.skip(f"needs the real data: {path} not found (set OL_RAY_DATA to the data folder)")
    return path


def read_tsv(path: str, limit: int) -> list[list[str]]:
    """The first `limit` data rows of a TSV file (SST-2 is read with quoting disabled)."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [row for _, row in zip(range(limit), reader)]


@pytest.fixture(scope="session")
def sst2_rows() -> list[list[str]]:
    """3,000 labelled rows: the first of SST-2's training set, or where the real data is absent, SST-2-like rows
    generated here (data_files.generated_rows), so that a clone anywhere tests itself."""
    if os.path.exists(SST2_TRAIN):
        return read_tsv(SST2_TRAIN, 3000)
    return generated_rows(3000)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sst2_rows) -> str:
    """A 2-layer, hidden-32 BERT classifier with a word-level tokenizer from the words of `sst2_rows`; nothing
    downloaded."""
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-bert")), [row[0] for row in sst2_rows])


@pytest.fixture(scope="session")
def tiny_model_without_dropout(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny classifier with dropout off: the ranks of a data-parallel learner draw other dropout masks than one
    learner, which is not what their tests compare."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 GPT-2 with a word-level tokenizer (no BOS, no pad) made offline."""
    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("tiny-gpt2")), LM_SENTENCES, "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 Llama (grouped-query attention, tied embeddings) whose tokenizer adds <s>."""
    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("tiny-llama")), LM_SENTENCES, "llama")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    """The suite's local Ray: 2 CPUs, a capped object store, the runs' namespace (`ol_ray`), its Prometheus
    endpoint at http://127.0.0.1:{ray.metrics_port}/metrics. Started by the first module that asks and kept for the
    next (a start costs about 5 s, and a dozen modules ask); shut down at the end of the session, or by a test that
    needs no Ray (the next module that asks starts it again). A module must leave no actor behind."""
    import ray

    from ol_ray.driver.cluster import NAMESPACE

    if not ray.is_initialized():
        port = free_port()
        ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False,
                 log_to_driver=False, _metrics_export_port=port, namespace=NAMESPACE)
        ray.metrics_port = port
    yield ray


@pytest.fixture(scope="session", autouse=True)
def ray_shut_down_at_the_end():
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def alive_actors():
    """Class names of the actors alive in the connected Ray, from its control store (the state API needs the
    dashboard, which the test Ray does not run)."""
    import ray

    return sorted(actor["ActorClassName"] for actor in ray._private.state.actors().values()
                  if actor["State"] == "ALIVE")


def no_actors_left(timeout_s: float = 20.0) -> list:
    """Wait until no actor is alive (a killed actor takes a moment to be marked dead); returns those still alive."""
    import time

    deadline = time.monotonic() + timeout_s
    while alive_actors() and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive_actors()
