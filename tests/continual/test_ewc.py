"""Elastic weight consolidation: the empirical Fisher equals squared per-sample gradients, the penalty is zero at
the anchor and pulls parameters back towards it, and its state survives a round trip."""

import copy

import numpy as np
import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.continual.ewc import ElasticWeights, empirical_fisher
from ol_ray.data.tokenization import tokenize_texts
from ol_ray.learner.update import weighted_step
from ol_ray.models.loading import load_model
from ol_ray.tasks.losses import TrainBatch

CPU = torch.device("cpu")
STRENGTH = 100.0  # lr * strength * max Fisher stays well under 2: the penalised step is stable


@pytest.fixture(scope="module")
def setup(tiny_model_dir, sst2_rows):
    torch.manual_seed(0)
    model = load_model(ModelConfig(name_or_path=tiny_model_dir), pretrained=True)
    input_ids, _ = tokenize_texts([row[0] for row in sst2_rows[:6]], tiny_model_dir, 32)
    batch = TrainBatch(input_ids, np.array([int(row[1]) for row in sst2_rows[:6]]), np.ones(6, dtype=np.float32))
    return model, batch


def test_empirical_fisher_is_the_mean_squared_per_sample_gradient(setup):
    model, batch = setup
    fisher = empirical_fisher(model, batch, 0, CPU)
    model.eval()
    head = [name for name, _ in model.named_parameters()][-1]
    expected = torch.zeros_like(dict(model.named_parameters())[head])
    for index in range(len(batch.labels)):  # by hand, one sample at a time
        model.zero_grad()
        ids = torch.as_tensor(batch.input_ids[index], dtype=torch.long)[None]
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits, torch.as_tensor([batch.labels[index]]))
        loss.backward()
        expected += dict(model.named_parameters())[head].grad.pow(2)
    model.zero_grad(set_to_none=True)
    assert torch.allclose(fisher[head], expected / len(batch.labels), rtol=1e-4, atol=1e-10)
    assert all(p.grad is None for p in model.parameters())  # nothing left for the next step to add to


def test_penalty_is_zero_at_the_anchor_and_holds_important_weights(setup):
    model, batch = setup
    model = copy.deepcopy(model)
    ewc = ElasticWeights(strength=STRENGTH, decay=0.5)
    assert ewc.penalty(model) is None
    ewc.refresh(model, empirical_fisher(model, batch, 0, CPU))
    assert float(ewc.penalty(model).detach()) == 0.0
    free, held = copy.deepcopy(model), copy.deepcopy(model)
    flipped = TrainBatch(batch.input_ids, 1 - batch.labels, batch.weights)  # a new domain that undoes the old
    for trained, penalty in ((free, None), (held, ewc.penalty)):
        optimizer = torch.optim.SGD(trained.parameters(), lr=0.05)
        for _ in range(5):
            stats = weighted_step(trained, optimizer, flipped, 0, CPU, penalty=penalty)
    assert stats["penalty"] > 0
    # the Fisher-weighted distance from the anchor (what the penalty measures) is much smaller when penalised
    assert float(ewc.penalty(held).detach()) < 0.5 * float(ewc.penalty(free).detach())


def test_online_fisher_decays_and_state_round_trips(setup):
    model, batch = setup
    ewc = ElasticWeights(strength=1.0, decay=0.5)
    estimate = empirical_fisher(model, batch, 0, CPU)
    ewc.refresh(model, estimate)
    ewc.refresh(model, estimate)
    name = next(iter(estimate))
    assert torch.allclose(ewc.fisher[name], 1.5 * estimate[name])
    copy_of = ElasticWeights(strength=1.0)
    copy_of.load_state_dict(ewc.state_dict(), CPU)
    assert copy_of.refreshes == 2 and float(copy_of.penalty(model).detach()) == 0.0
