"""LoRA adapters: what trains, what is published, how a scorer takes it, and checkpoints peft can load."""

import dataclasses
import os

import pytest
import torch

from ol_ray.config import ConfigError, ModelConfig, load_config
from ol_ray.learner.core import OnlineLearner
from ol_ray.models.loading import ModelError, head_layer, load_model, load_numpy_state, state_to_numpy
from ol_ray.models.lora import LoraError, is_adapter_folder

from data_files import candidates

peft = pytest.importorskip("peft")


def lora(tiny_model_dir, **changes):
    return ModelConfig(name_or_path=tiny_model_dir, lora_r=4, lora_targets=("query", "value"), **changes)


def cfg_overrides(tiny_model_dir):
    return ["stream.path=unused", "stream.text_field=sentence", f"model.name_or_path={tiny_model_dir}",
            "model.lora_r=4", "model.lora_targets=[query]", "selection.pool_size=8", "batching.batch_size=8",
            "learner.lr=5e-3", "learner.torch_threads=1", "checkpoint.every_updates=1"]


def logits(model, ids=((2, 40, 41, 3), (2, 50, 3, 0))):
    model.eval()
    with torch.no_grad():
        input_ids = torch.tensor(ids)
        return model(input_ids=input_ids, attention_mask=(input_ids != 0).long()).logits


def test_only_adapters_and_the_head_train_and_travel(tiny_model_dir):
    model = load_model(lora(tiny_model_dir))
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or "modules_to_save" in name for name in trained)
    assert any("classifier" in name for name in trained) and sum("lora_A" in name for name in trained) == 4
    published = state_to_numpy(model, trainable_only=True)
    assert set(published) == trained
    full = state_to_numpy(model)
    assert sum(v.nbytes for v in published.values()) < 0.05 * sum(v.nbytes for v in full.values())
    assert head_layer(model, 2).weight.requires_grad  # the trainable copy of the head, which scoring hooks


def test_a_scorer_built_without_weights_takes_the_published_adapters(tiny_model_dir):
    cfg = lora(tiny_model_dir)
    learner_model = load_model(cfg)
    with torch.no_grad():  # as if trained: move every trainable tensor
        for parameter in learner_model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    scorer_model = load_model(cfg, pretrained=False)  # LoRA: the pretrained base, whatever was asked
    assert not torch.allclose(logits(scorer_model), logits(learner_model))
    load_numpy_state(scorer_model, state_to_numpy(learner_model, trainable_only=True))
    assert torch.allclose(logits(scorer_model), logits(learner_model), atol=1e-6)
    with pytest.raises(ModelError, match="trained tensors missing"):
        partial = state_to_numpy(learner_model, trainable_only=True)
        load_numpy_state(scorer_model, {k: v for k, v in partial.items() if "lora_B" not in k})


def test_checkpoints_hold_adapters_that_peft_loads_and_the_learner_resumes_from(tiny_model_dir, sst2_rows,
                                                                                 tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = load_config(None, cfg_overrides(tiny_model_dir))
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    before = logits(learner.model).clone()
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 32, window=0))
    (checkpoint,) = learner.end_window(0, {"row": 32}, read=32, quarantined=0)
    trained = logits(learner.model)
    assert learner.updates == 4 and not torch.allclose(trained, before)
    folder = os.path.join(checkpoint["path"], "model")
    assert is_adapter_folder(folder) and os.path.isfile(os.path.join(folder, "adapter_model.safetensors"))
    assert not os.path.exists(os.path.join(folder, "model.safetensors"))  # the base is not copied
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    assert torch.allclose(logits(peft.PeftModel.from_pretrained(base, folder)), trained, atol=1e-6)
    resumed = OnlineLearner(cfg, str(tmp_path / "run"))
    assert resumed.updates == 4 and torch.allclose(logits(resumed.model), trained, atol=1e-6)
    assert any(p.requires_grad for p in resumed.model.parameters())  # trainable again, not frozen for inference
    for other in (["model.lora_r=0"], ["model.lora_r=8"], ["model.lora_targets=[value]"]):  # not what was saved
        with pytest.raises(LoraError, match="holds LoRA adapters of rank 4"):
            OnlineLearner(load_config(None, [*cfg_overrides(tiny_model_dir), *other]), str(tmp_path / "run"))


def fully_fine_tuned_run(tiny_model_dir, sst2_rows, tmp_path) -> str:
    """A run directory holding a checkpoint of a fully fine-tuned classifier."""
    full = load_config(None, [*cfg_overrides(tiny_model_dir), "model.lora_r=0"])
    learner = OnlineLearner(full, str(tmp_path / "run"))
    learner.add_candidates(candidates(tiny_model_dir, sst2_rows, 0, 8, window=0))
    learner.end_window(0, {"row": 8}, read=8, quarantined=0)
    return str(tmp_path / "run")


def test_a_fully_fine_tuned_checkpoint_does_not_resume_as_lora(tiny_model_dir, sst2_rows, tmp_path):
    run_dir = fully_fine_tuned_run(tiny_model_dir, sst2_rows, tmp_path)
    with pytest.raises(LoraError, match="fully fine-tuned"):
        OnlineLearner(load_config(None, cfg_overrides(tiny_model_dir)), run_dir)


def test_bad_lora_settings_are_named(tiny_model_dir):
    with pytest.raises(ConfigError, match="model.lora_r"):
        load_config(None, ["stream.path=x", "model.lora_r=-1"])
    with pytest.raises(LoraError, match="model.lora_targets"):
        load_model(dataclasses.replace(lora(tiny_model_dir), lora_targets=("no_such_layer",)))


def test_a_causal_lm_trains_and_publishes_adapters_only_and_peft_loads_its_checkpoint(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from data_files import lm_candidates
    from tiny_model import LM_SENTENCES

    cfg = load_config(None, ["stream.path=unused", f"model.name_or_path={tiny_llama_dir}", "model.kind=causal_lm",
                             "model.lora_r=4", "model.lora_targets=[q_proj, v_proj]", "selection.pool_size=8",
                             "batching.batch_size=8", "learner.lr=1e-2", "learner.torch_threads=1"])
    learner = OnlineLearner(cfg, str(tmp_path / "run"))
    trained = {name for name, p in learner.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)  # no head of its own: the LM head stays frozen
    published = state_to_numpy(learner.model, trainable_only=True)
    assert set(published) == trained and sum("lora_A" in name for name in published) == 4
    ids = ((2, 7, 8, 9), (2, 10, 11, 0))
    before = logits(learner.model, ids).clone()
    learner.add_candidates(lm_candidates(tiny_llama_dir, LM_SENTENCES * 4))
    (checkpoint,) = learner.end_window(0, {"row": 20}, read=20, quarantined=0)
    after = logits(learner.model, ids)
    assert learner.updates == 2 and not torch.allclose(after, before)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    loaded = peft.PeftModel.from_pretrained(base, os.path.join(checkpoint["path"], "model"))
    assert torch.allclose(logits(loaded, ids), after, atol=1e-6)


def test_a_checkpoint_resumes_only_as_the_kind_of_model_it_holds(tiny_model_dir, sst2_rows, tmp_path):
    run_dir = fully_fine_tuned_run(tiny_model_dir, sst2_rows, tmp_path)
    with pytest.raises(LoraError, match="sequence_classification model"):
        OnlineLearner(load_config(None, [*cfg_overrides(tiny_model_dir), "model.lora_r=0", "model.kind=causal_lm"]),
                      run_dir)
