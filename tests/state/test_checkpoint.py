import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from ol_ray.config import ModelConfig
from ol_ray.models.loading import load_model, load_tokenizer
from ol_ray.state.checkpoint import (CheckpointError, checkpoints_newest_first, latest_checkpoint, load_checkpoint,
                                     load_columns, save_checkpoint, save_columns)


def candidates():
    token_ids = np.empty(2, dtype=object)
    token_ids[:] = [np.array([2, 7, 3], dtype=np.int32), np.array([2, 3], dtype=np.int32)]
    return {"sample_id": np.array(["a:1", "a:2"], dtype=object), "input_ids": token_ids,
            "label": np.array([1, 0]), "embedding": np.ones((2, 4), dtype=np.float32)}


def save(root, step, model, tokenizer, keep=2):
    return save_checkpoint(str(root), step, model, tokenizer,
                           {"optimizer": {"lr": 0.1}, "torch_rng": torch.get_rng_state()},
                           candidates(), {"updates": step, "cursor": {"row": step * 10}}, keep,
                           {"seen_ids": np.array([2**64 - 1, 5], dtype=np.uint64)})


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return load_model(ModelConfig(name_or_path=tiny_model_dir)), load_tokenizer(tiny_model_dir)


def test_round_trip_without_pickle_and_hugging_face_format(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    path = save(tmp_path, 7, model, tokenizer)
    state, training_state, restored = load_checkpoint(path)
    arrays = state.pop("arrays")
    assert state == {"updates": 7, "cursor": {"row": 70}}
    assert arrays["seen_ids"].dtype == np.uint64 and arrays["seen_ids"].tolist() == [2**64 - 1, 5]
    assert torch.equal(training_state["torch_rng"], torch.get_rng_state()) or training_state["torch_rng"].numel()
    assert list(restored["sample_id"]) == ["a:1", "a:2"] and restored["input_ids"][0].tolist() == [2, 7, 3]
    assert np.array_equal(restored["embedding"], np.ones((2, 4)))
    assert os.path.isfile(os.path.join(path, "model", "model.safetensors"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(os.path.join(path, "model"))
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)
    assert latest_checkpoint(str(tmp_path)) == path


def test_columns_refuse_pickled_objects(tmp_path):
    save_columns(str(tmp_path), candidates())
    np.savez(tmp_path / "candidates.npz", evil=np.array([object()], dtype=object))
    with pytest.raises(ValueError):  # allow_pickle=False
        load_columns(str(tmp_path))


def test_keeps_the_newest_and_survives_a_crash_mid_write(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    for step in (1, 2, 3):
        save(tmp_path, step, model, tokenizer, keep=2)
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("step-")) == ["step-00000002", "step-00000003"]

    class Crashing:
        def save_pretrained(self, folder):
            os.makedirs(folder)
            raise OSError("disk full")

    with pytest.raises(OSError):
        save(tmp_path, 4, Crashing(), tokenizer)
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000003")
    assert not os.path.exists(tmp_path / "step-00000004")
    save(tmp_path, 3, model, tokenizer)  # the same step again replaces it whole
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000003")
    assert latest_checkpoint(str(tmp_path / "none")) is None


def test_a_corrupt_checkpoint_is_an_error_and_older_ones_are_listed_next(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    for step in (1, 2):
        save(tmp_path, step, model, tokenizer)
    (tmp_path / "step-00000002" / "state.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="step-00000002"):
        load_checkpoint(str(tmp_path / "step-00000002"))
    assert [os.path.basename(p) for p in checkpoints_newest_first(str(tmp_path))] == ["step-00000002",
                                                                                      "step-00000001"]


def test_every_file_is_in_the_manifest_and_a_truncated_one_is_unreadable(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    path = save(tmp_path, 1, model, tokenizer)
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as handle:
        listed = set(json.load(handle))
    on_disk = {os.path.relpath(os.path.join(top, name), path) for top, _, names in os.walk(path) for name in names}
    assert listed == on_disk - {"manifest.json"} and "model/model.safetensors" in listed
    with open(os.path.join(path, "candidates.json"), "r+b") as handle:
        handle.truncate(3)
    with pytest.raises(CheckpointError, match="candidates.json has 3 bytes"):
        load_checkpoint(path)
    os.remove(os.path.join(path, "arrays.npz"))
    with pytest.raises(CheckpointError, match="arrays.npz is missing"):
        load_checkpoint(path)
