"""What scorers compute, chunk preparation, and the scorer pool's dispatch and growth (on a local Ray)."""

import time

import numpy as np
import pytest
import ray

from ol_ray.config import load_config
from ol_ray.data.source import RecordFormat
from ol_ray.scoring.chunks import Chunk, prepare_chunk
from ol_ray.scoring.pool import GROW_AFTER_S, ScorerPool, columns_needed


@pytest.mark.parametrize("overrides, expected", [
    ((), ()),  # random with a fixed batch size reads no score: no scorer model at all
    (("selection.strategy=entropy",), ("entropy", "loss", "predicted")),
    (("selection.strategy=diversity",), ("embedding", "loss", "predicted")),
    (("selection.strategy=badge",), ("features", "loss", "predicted", "probs")),
    (("selection.strategy=rho_loss",), ("loss", "predicted")),
    (("selection.strategy=mix", "selection.mix={margin: 0.5, random: 0.5}"), ("loss", "margin", "predicted")),
    (("batching.policy=uncertainty",), ("entropy", "loss", "predicted")),
    (("selection.strategy=entropy", "model.kind=causal_lm"), ("entropy", "loss", "target_tokens",
                                                              "token_accuracy")),
])
def test_scorers_compute_only_what_the_run_reads(overrides, expected):
    assert columns_needed(load_config(None, ["stream.path=x.tsv", *overrides])) == expected


def test_a_chunk_is_validated_and_tokenized_with_its_rejects_quarantined(ray_local, tiny_model_dir, tmp_path):
    from ol_ray.data.quarantine import QuarantineSink

    cfg = load_config(None, ["stream.path=x.tsv", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}"])
    records = tuple({"sample_id": f"f:{i}", "raw": raw, "origin": ""} for i, raw in
                    enumerate([b"a fine film\t1", b"no label", b"a dull film\t0"]))
    sink = ray_local.remote(num_cpus=0)(QuarantineSink).remote(str(tmp_path / "quarantine.jsonl"))
    block = prepare_chunk(Chunk(0, 3, records, RecordFormat("tsv", ("sentence", "label"))), cfg, sink, {})
    assert list(block["sample_id"]) == ["f:0", "f:2"] and list(block["label"]) == [1, 0]
    assert all(len(ids) > 2 for ids in block["input_ids"]) and set(block["window"]) == {3}
    assert ray_local.get(sink.stats.remote())["samples_quarantined"] == 1
    ray_local.kill(sink)


def test_the_pool_sends_each_chunk_to_the_least_busy_scorer_and_grows_when_all_are_full(ray_local):
    class SlowScorer:  # a scorer's interface, process(chunk) -> (result, block), taking a while (defined here so
        @ray.method(num_returns=2)  # that Ray's workers get it by value)
        def process(self, chunk):
            time.sleep(2.0)  # long enough that no chunk finishes while the test fills the pool
            return chunk, np.zeros(1)

    pool = ScorerPool(lambda: ray_local.remote(num_cpus=0)(SlowScorer).remote(), size=1, max_size=2, per_scorer=2)
    assert pool.has_room()
    pool.submit(1)
    pool.submit(2)
    assert not pool.has_room(backlog=False)
    now = time.monotonic()
    assert not pool.has_room(backlog=True, now=now)  # full: the clock starts
    assert pool.has_room(backlog=True, now=now + GROW_AFTER_S) and len(pool) == 2  # full for long enough: grow
    pool.submit(3)
    pool.submit(4)  # both full again
    assert not pool.has_room(backlog=True, now=now + 10 * GROW_AFTER_S)
    assert not pool.has_room(backlog=True, now=now + 20 * GROW_AFTER_S) and len(pool) == 2  # never past max_size
    assert [len(refs) for refs in pool.in_flight] == [2, 2]
    pool.drain()
    result, _ = pool.submit(5)
    assert [len(refs) for refs in pool.in_flight] == [1, 0] and ray_local.get(result) == 5
    pool.drain()
    assert [len(refs) for refs in pool.in_flight] == [0, 0]
    pool.kill()
