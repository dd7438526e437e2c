"""The served model without Serve: it starts from the run's newest checkpoint (or the configured model), answers
with the version that produced each answer, and generates with a causal LM."""

import os

import numpy as np
import pytest
import torch

from ol_ray.config import load_config
from ol_ray.serve.model import ServedModel, newest_checkpoint


def test_a_classifier_answers_from_the_configured_model_before_any_checkpoint(tiny_model_dir, tmp_path):
    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}",
                             "stream.label_names=[neg, pos]"])
    served = ServedModel(cfg, str(tmp_path))
    assert newest_checkpoint(str(tmp_path)) is None and served.weight_version == 0
    answers = served.predict(["a fine film", "dull"])
    assert [a["label_name"] for a in answers] == [["neg", "pos"][a["label"]] for a in answers]
    assert all(np.isclose(sum(a["probabilities"]), 1.0, atol=1e-4) and a["weight_version"] == 0 for a in answers)


def test_a_causal_lm_generates_at_most_the_allowed_tokens(tiny_gpt2_dir, tmp_path):
    cfg = load_config(None, ["stream.path=x", "stream.text_field=text", f"model.name_or_path={tiny_gpt2_dir}",
                             "model.kind=causal_lm", "serve.max_new_tokens=5", "selection.strategy=random"])
    served = ServedModel(cfg, str(tmp_path))
    reply = served.generate("the cat sat on", max_new_tokens=50)
    assert 0 < reply["tokens"] <= 5 and isinstance(reply["text"], str) and reply["weight_version"] == 0
    chat = served.generate(messages=[{"role": "user", "content": "the dog ran"}], max_new_tokens=3)
    assert chat["tokens"] <= 3


def test_a_corrupt_newest_checkpoint_is_skipped(tmp_path):
    folder = tmp_path / "checkpoints" / "step-00000004"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"updates": 4}')
    (tmp_path / "checkpoints" / "latest").write_text("step-00000004")
    assert newest_checkpoint(str(tmp_path)) is None  # no manifest and no model: nothing it can serve


def test_a_checkpoint_pruned_between_its_check_and_its_load_gives_way_to_the_one_before(tiny_model_dir, tmp_path,
                                                                                        monkeypatch):
    import shutil

    import ol_ray.serve.model as served_model
    from ol_ray.models.loading import load_model, load_tokenizer
    from ol_ray.state.checkpoint import save_checkpoint

    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}"])
    model, tokenizer = load_model(cfg.model), load_tokenizer(tiny_model_dir)
    for step in (2, 4):
        save_checkpoint(str(tmp_path / "checkpoints"), step, model, tokenizer, {}, {}, {"updates": step}, keep=2)
    real_load = served_model.load_model

    def pruned_first(model_cfg, pretrained=False, path=None):  # a live run's checkpoint.keep removes the newest
        if path and "step-00000004" in path:                    # after it was checked, before it is read
            shutil.rmtree(os.path.dirname(path))
        return real_load(model_cfg, pretrained=pretrained, path=path)

    monkeypatch.setattr(served_model, "load_model", pruned_first)
    served = ServedModel(cfg, str(tmp_path))
    assert served.weight_version == 2 and served.source.endswith("step-00000002")


def test_a_server_no_longer_following_a_run_takes_its_newer_checkpoints(tiny_model_dir, tmp_path):
    from ol_ray.models.loading import load_model, load_tokenizer
    from ol_ray.state.checkpoint import save_checkpoint

    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}"])
    model, tokenizer = load_model(cfg.model), load_tokenizer(tiny_model_dir)
    save_checkpoint(str(tmp_path / "checkpoints"), 2, model, tokenizer, {}, {}, {"updates": 2}, keep=2)
    served = ServedModel(cfg, str(tmp_path))
    assert served.weight_version == 2 and not served.take_newer_checkpoint()  # nothing newer
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the run's last updates, which no request pulled before it ended
    save_checkpoint(str(tmp_path / "checkpoints"), 6, model, tokenizer, {}, {}, {"updates": 6}, keep=2)
    assert served.take_newer_checkpoint() and served.weight_version == 6 and served.source.endswith("step-00000006")
    assert torch.equal(next(served.model.parameters()), next(model.parameters()))
    assert served.predict(["a fine film"])[0]["weight_version"] == 6


def test_a_lora_server_answers_as_the_learner_from_the_adapters_and_head_alone(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    from ol_ray.data.tokenization import pad_batch, tokenize_texts
    from ol_ray.models.loading import load_model, load_numpy_state, state_to_numpy

    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}", "model.lora_r=4",
                             "model.lora_targets=[query]"])
    served = ServedModel(cfg, str(tmp_path))
    learner = load_model(cfg.model)
    with torch.no_grad():  # what training did to the adapters and the head
        for parameter in learner.parameters():
            if parameter.requires_grad:
                parameter.add_(0.2 * torch.randn_like(parameter))
    published = state_to_numpy(learner, trainable_only=True)  # what a LoRA run publishes
    assert published and all("lora_" in name or "modules_to_save" in name for name in published)
    load_numpy_state(served.model, published)  # what a replica's refresh does with it
    ids, _ = tokenize_texts(["a fine film"], tiny_model_dir, cfg.model.max_length)
    learner.eval()
    with torch.no_grad():
        expected = torch.softmax(learner(**pad_batch(ids, served.pad_id, torch.device("cpu"))).logits, -1)[0]
    assert np.allclose(served.predict(["a fine film"])[0]["probabilities"], expected.numpy(), atol=1e-5)


def test_a_server_whose_config_loads_none_of_the_checkpoints_refuses_to_start(tiny_model_dir, tmp_path):
    from ol_ray.models.loading import ModelError, load_model, load_tokenizer
    from ol_ray.state.checkpoint import save_checkpoint

    cfg = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}"])
    save_checkpoint(str(tmp_path / "checkpoints"), 3, load_model(cfg.model), load_tokenizer(tiny_model_dir), {}, {},
                    {"updates": 3}, keep=2)
    wrong = load_config(None, ["stream.path=x", f"model.name_or_path={tiny_model_dir}", "model.num_labels=5"])
    with pytest.raises(ModelError, match="does not load with this config"):  # not the base model, as version 0
        ServedModel(wrong, str(tmp_path))
