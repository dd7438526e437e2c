"""One contract, every registered task: the same checks over the classifier and the causal LM (tiny models built
offline). What a task returns is what the scorers, the learner and evaluation read without asking its kind."""

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.data.tokenization import object_column, pad_batch
from ol_ray.models.loading import load_model, load_tokenizer, output_layer, pad_id_of
from ol_ray.tasks import TASKS, task_for

CPU = torch.device("cpu")
TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "birds sing in the morning .", "we read a book ."]


@pytest.fixture(params=sorted(TASKS))
def setup(request, tiny_model_dir, tiny_gpt2_dir):
    kind = request.param
    folder = tiny_gpt2_dir if kind == "causal_lm" else tiny_model_dir
    model_cfg = ModelConfig(name_or_path=folder, kind=kind, max_length=32)
    columns = {"text": np.array(TEXTS, dtype=object), "prompt": np.array([""] * 4, dtype=object),
               "messages": np.array([""] * 4, dtype=object), "label": np.array([0, 1, 1, 0])}
    return task_for(kind), model_cfg, load_model(model_cfg).eval(), columns


def test_the_registry_knows_every_model_kind():
    assert set(TASKS) == {"sequence_classification", "causal_lm"}
    with pytest.raises(ValueError, match="model.kind must be one of"):
        task_for("seq2seq")


def test_a_task_tokenizes_scores_trains_and_evaluates(setup):
    task, model_cfg, model, columns = setup
    assert task.kind == model_cfg.kind
    input_ids, truncated, masks, rejected = task.tokenize(columns, model_cfg)
    assert len(input_ids) == len(truncated) == 4 and rejected == []
    assert (masks is None) == task.labelled  # only a causal LM marks target tokens
    pad_id = pad_id_of(load_tokenizer(model_cfg.name_or_path))
    scored = {"input_ids": object_column(input_ids), "label": columns["label"]}
    if masks is not None:
        scored["target_mask"] = object_column(masks)
    stats = task.score(model, output_layer(model, model_cfg), scored, pad_id, CPU)
    assert set(task.prequential_columns) <= set(stats)
    assert all(len(stats[name]) == 4 for name in task.prequential_columns)
    assert np.all(np.isfinite(stats["loss"])) and np.all(stats["loss"] >= 0)
    assert {"entropy", "margin", "max_prob", "grad_norm", "embedding", "probs", "features"} <= set(stats)
    inputs = pad_batch(input_ids, pad_id, CPU)
    logits = model(**inputs).logits
    losses = task.sample_losses(logits, inputs, columns["label"], masks, CPU)
    correct = task.sample_correct(logits, inputs, columns["label"], masks, CPU)
    assert losses.shape == correct.shape == (4,)
    assert np.allclose(losses.detach().numpy(), stats["loss"], atol=1e-4)  # the scorer's loss is the update's
    assert torch.all((correct >= 0) & (correct <= 1))
    figures = task.evaluate(model, input_ids, columns["label"], masks, pad_id, CPU, batch_size=2)
    if task.labelled:  # a classifier's set loss is the mean sample loss (a causal LM's pools tokens instead)
        assert figures["loss"] == pytest.approx(float(losses.mean()), rel=1e-4)
    assert all(np.isfinite(value) for value in figures.values())
    assert task.label_classes(model_cfg) == (model_cfg.num_labels if task.labelled else 0)
