import threading
import time

import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.models import load_model
from ol_ray.weights import WeightClient, WeightPublisher, WeightStore


@pytest.fixture
def store(ray_local):
    actor = ray_local.remote(num_cpus=0)(WeightStore).remote()
    yield actor
    ray_local.kill(actor)


def test_versions_flow_from_publisher_to_client(ray_local, store, tiny_model_dir):
    learner_model = load_model(ModelConfig(name_or_path=tiny_model_dir, seed=1))
    scorer_model = load_model(ModelConfig(name_or_path=tiny_model_dir, seed=2), pretrained=False)
    publisher = WeightPublisher(store, every=3)
    assert publisher.maybe_publish(learner_model, 0, force=True)
    client = WeightClient(store, max_lead=100)
    client.refresh(scorer_model, wait=True)
    assert client.version == 0
    assert torch.equal(scorer_model.classifier.weight, learner_model.classifier.weight)
    version_0 = learner_model.classifier.weight.detach().clone()
    with torch.no_grad():
        learner_model.classifier.weight.add_(1.0)  # training goes on: the published version must not move
    late_client = WeightClient(store, max_lead=100)
    late_model = load_model(ModelConfig(name_or_path=tiny_model_dir), pretrained=False)
    late_client.refresh(late_model, wait=True)
    assert torch.equal(late_model.classifier.weight, version_0)
    assert not publisher.maybe_publish(learner_model, 2)  # fewer than `every` updates since the last publish
    assert publisher.maybe_publish(learner_model, 3)  # the client polled since version 0
    assert not publisher.maybe_publish(learner_model, 6)  # nobody polled since version 3: skip the work
    client.refresh(scorer_model)
    assert client.version == 3 and torch.equal(scorer_model.classifier.weight, learner_model.classifier.weight)
    client.refresh(scorer_model)  # nothing newer: no pull
    stats = ray_local.get(store.stats.remote())
    assert stats["weight_publishes"] == 2 and stats["weight_pulls"] == 3 and stats["weight_bytes_published"] > 0


def test_client_waits_while_scoring_runs_too_far_ahead(ray_local, store, tiny_model_dir):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir), pretrained=False)
    WeightPublisher(store, every=1).maybe_publish(model, 0, force=True)
    client = WeightClient(store, max_lead=64, poll_s=0.01)
    client.scored(60)
    ray_local.get(store.stats.remote())  # the report has arrived
    released = threading.Event()

    def score_more():
        client.refresh(model, upcoming=16)  # 60 + 16 > 64: must wait for the learner
        released.set()

    thread = threading.Thread(target=score_more)
    thread.start()
    time.sleep(0.3)
    assert not released.is_set()
    store.consumed.remote(32)
    thread.join(timeout=10)
    assert released.is_set()
