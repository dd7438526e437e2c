import numpy as np
import pytest

from ol_ray.continual.replay import ReplayBuffer, object_array
from ol_ray.state.checkpoint import load_columns, save_columns


def samples(start: int, count: int, labels=None) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + count)
    return {"sample_id": object_array([f"s:{i}" for i in ids]),
            "input_ids": object_array([np.arange(2 + i % 5, dtype=np.int32) for i in ids]),
            "label": np.asarray(labels if labels is not None else ids % 2, dtype=np.int64),
            "loss": np.ones(count, dtype=np.float32)}  # a score column: not kept, rescored on replay


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    # 2000 runs of a 100-sample stream into a 10-slot buffer: each sample is kept with probability 10/100
    kept = np.zeros(100)
    for seed in range(2000):
        buffer = ReplayBuffer(10, seed=seed)
        for start in range(0, 100, 7):  # offered in uneven pools, as updates would
            buffer.add(samples(start, min(7, 100 - start)))
        kept[[int(s.split(":")[1]) for s in buffer.columns()["sample_id"]]] += 1
    expected = 2000 * 10 / 100
    chi2 = float(((kept - expected) ** 2 / expected).sum())
    assert chi2 < 140  # 99 degrees of freedom: the 0.5% tail starts near 135
    assert kept[:10].mean() == pytest.approx(expected, rel=0.1)  # the first samples are not favoured
    assert kept[-10:].mean() == pytest.approx(expected, rel=0.1)  # nor the last


def test_the_buffer_respects_its_bound_and_keeps_only_sample_columns():
    buffer = ReplayBuffer(16, seed=0)
    for start in range(0, 500, 32):
        buffer.add(samples(start, 32))
        assert len(buffer) <= 16
    assert len(buffer) == 16 and buffer.seen == 512
    columns = buffer.take(buffer.sample(5))
    assert set(columns) == {"sample_id", "input_ids", "label"} and len(columns["label"]) == 5
    assert len(buffer.sample(50)) == 16  # never more than it holds, and without repeats
    assert len(set(buffer.sample(16).tolist())) == 16


def test_class_balanced_replay_keeps_the_minority_class():
    labels = (np.random.default_rng(0).random(2000) < 0.1).astype(np.int64)  # 10% class 1
    balanced, reservoir = ReplayBuffer(100, "class_balanced", classes=2, seed=0), ReplayBuffer(100, seed=0)
    for buffer in (balanced, reservoir):
        for start in range(0, 2000, 50):
            buffer.add(samples(start, 50, labels[start:start + 50]))
    assert np.bincount(balanced.labels(), minlength=2).tolist() == [50, 50]
    assert np.bincount(reservoir.labels(), minlength=2)[1] < 25
    with pytest.raises(ValueError, match="number of classes"):
        ReplayBuffer(10, "class_balanced")


@pytest.mark.parametrize("capacity", [5, 101])  # capacities that two balanced classes cannot split evenly
def test_class_balanced_replay_of_balanced_classes_is_a_uniform_sample(capacity):
    # a class stays "full" once it was the largest: balanced classes then sample like a reservoir, not the newest
    ages = []
    for seed in range(40):
        buffer = ReplayBuffer(capacity, "class_balanced", classes=2, seed=seed)
        for start in range(0, 1000, 50):
            buffer.add(samples(start, 50))
        ages.extend(1000 - int(s.split(":")[1]) for s in buffer.columns()["sample_id"])
    assert np.mean(ages) == pytest.approx(500, rel=0.15)


def test_a_smaller_buffer_keeps_a_uniform_subset_of_a_checkpoint(tmp_path):
    buffer = ReplayBuffer(20, seed=0)
    buffer.add(samples(0, 100))
    smaller = ReplayBuffer(8, seed=1)
    smaller.load(buffer.state_dict(), buffer.columns())
    assert len(smaller) == 8 and set(smaller.columns()["sample_id"]) <= set(buffer.columns()["sample_id"])


def test_stored_token_ids_are_copies_not_views_of_the_batch():
    batch = samples(0, 4)
    big = np.zeros((4, 1000), dtype=np.int32)  # token ids that are views into one large array
    batch["input_ids"] = object_array([big[i, :5] for i in range(4)])
    buffer = ReplayBuffer(4)
    buffer.add(batch)
    assert all(item["input_ids"].base is None for item in buffer.slots)


def test_the_buffer_survives_a_checkpoint_round_trip(tmp_path):
    buffer = ReplayBuffer(8, seed=3)
    buffer.add(samples(0, 40))
    save_columns(str(tmp_path), buffer.columns(), "replay")
    restored = ReplayBuffer(8, seed=99)
    restored.load(buffer.state_dict(), load_columns(str(tmp_path), "replay"))
    assert list(restored.columns()["sample_id"]) == list(buffer.columns()["sample_id"])
    assert all(np.array_equal(a, b) for a, b in zip(restored.columns()["input_ids"], buffer.columns()["input_ids"]))
    more = samples(40, 40)
    buffer.add(more)
    restored.add(more)  # same random state: the same samples are kept afterwards
    assert list(restored.columns()["sample_id"]) == list(buffer.columns()["sample_id"])
    with pytest.raises(ValueError, match="holds 0 samples"):
        ReplayBuffer(8).load(buffer.state_dict(), {})


def test_samples_of_an_older_checkpoint_without_a_rating_count_as_rated_one():
    buffer = ReplayBuffer(capacity=4)
    buffer.add(samples(0, 2))  # an older run's samples: no rating column
    rated = samples(2, 2)
    rated["rating"] = np.array([0.0, 0.5], dtype=np.float32)
    buffer.add(rated)
    columns = buffer.take(np.arange(4))
    assert columns["rating"].tolist() == [1.0, 1.0, 0.0, 0.5]  # what a rating-free sample trains as
    assert "rating" not in buffer.take(np.arange(2))  # none drawn is rated: no column, and weights as they are
