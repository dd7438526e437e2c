import os

import torch
from transformers import AutoModelForSequenceClassification

from ol_ray.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ol_ray.config import ModelConfig
from ol_ray.models import load_model, load_tokenizer


def save(root, step, model, tokenizer, keep=2):
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(str(root), step, model, tokenizer, {"optimizer": optimizer.state_dict()},
                           [{"sample_id": ["a"]}], {"updates": step, "cursor": {"row": step * 10}}, keep)


def test_round_trip_and_hugging_face_format(tiny_model_dir, tmp_path):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir))
    path = save(tmp_path, 7, model, load_tokenizer(tiny_model_dir))
    state, training_state, candidates = load_checkpoint(path)
    assert state == {"updates": 7, "cursor": {"row": 70}}
    assert "optimizer" in training_state and candidates == [{"sample_id": ["a"]}]
    reloaded = AutoModelForSequenceClassification.from_pretrained(os.path.join(path, "model"))
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)
    assert latest_checkpoint(str(tmp_path)) == path


def test_keeps_the_newest_and_ignores_half_written(tiny_model_dir, tmp_path):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir))
    tokenizer = load_tokenizer(tiny_model_dir)
    for step in (1, 2, 3):
        save(tmp_path, step, model, tokenizer, keep=2)
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("step-")) == ["step-00000002", "step-00000003"]
    (tmp_path / ".tmp-step-00000004").mkdir()  # a crash mid-write leaves only a temporary folder
    assert latest_checkpoint(str(tmp_path)).endswith("step-00000003")
    assert latest_checkpoint(str(tmp_path / "none")) is None
