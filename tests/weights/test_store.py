import pytest
import torch

from ol_ray.config import ModelConfig
from ol_ray.models.loading import load_model
from ol_ray.weights.store import WeightClient, WeightPublisher, WeightStore


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
    client = WeightClient(store)
    client.refresh(scorer_model, wait=True)
    assert client.version == 0
    assert torch.equal(scorer_model.classifier.weight, learner_model.classifier.weight)
    version_0 = learner_model.classifier.weight.detach().clone()
    with torch.no_grad():
        learner_model.classifier.weight.add_(1.0)  # training goes on: the published version must not move
    late_client = WeightClient(store)
    late_model = load_model(ModelConfig(name_or_path=tiny_model_dir), pretrained=False)
    late_client.refresh(late_model, wait=True)
    assert torch.equal(late_model.classifier.weight, version_0)
    assert not publisher.maybe_publish(learner_model, 2)  # fewer than `every` updates since the last publish
    assert publisher.maybe_publish(learner_model, 3)  # due: every 3 updates, polled or not (bounds staleness)
    client.refresh(scorer_model)
    assert client.version == 3 and torch.equal(scorer_model.classifier.weight, learner_model.classifier.weight)
    client.refresh(scorer_model)  # nothing newer: no pull
    assert publisher.maybe_publish(learner_model, 1, reset=True)  # a restored learner: back to version 1
    client.refresh(scorer_model)
    assert (client.generation, client.version) == (1, 1)  # pulled although 1 < 3: the restored weights win
    client.scored(40)
    store.consumed.remote(32)
    store.scorer_started.remote(1234)
    stats = ray_local.get(store.stats.remote())
    assert stats["weight_publishes"] == 3 and stats["weight_pulls"] == 4 and stats["weight_bytes_published"] > 0
    assert stats["samples_scored"] == 40 and stats["scoring_lead_max"] == 40 and stats["scorer_starts"] == 1


def test_without_scorers_only_forced_versions_are_published(ray_local, store, tiny_model_dir):
    model = load_model(ModelConfig(name_or_path=tiny_model_dir))
    publisher = WeightPublisher(store, every=1, scoring=False)  # random selection: nobody reads the weights
    assert publisher.maybe_publish(model, 0, force=True)
    assert not publisher.maybe_publish(model, 1) and not publisher.maybe_publish(model, 2)
    assert publisher.maybe_publish(model, 1, reset=True)  # a restore still resets the store


def test_a_dead_learners_late_publish_is_refused_and_a_restarted_store_fences_as_before(tmp_path):
    """Plain Python (no Ray): epochs fence publishes; the state file carries the fence over a store restart."""
    from ol_ray.weights.store import next_learner_epoch

    run_dir = str(tmp_path)
    old, new = next_learner_epoch(run_dir), next_learner_epoch(run_dir)
    assert (old, new) == (1, 2) and next_learner_epoch(run_dir) == 3
    state = str(tmp_path / "weight_store.json")
    store = WeightStore(state)
    assert store.publish(5, ["new"], 10, reset=True, epoch=new)
    assert not store.publish(6, ["late"], 10, epoch=old)  # the old incarnation, still running somewhere
    assert (store.version, store.refs, store.stats()["weight_publishes_refused"]) == (5, ["new"], 1)
    restarted = WeightStore(state)  # Ray restarted the actor: no weights until the next publish, the fence holds
    assert restarted.version == -1 and restarted.pull_if_newer(0, -1) is None
    assert not restarted.publish(7, ["late"], 10, epoch=old)
    assert restarted.publish(6, ["next"], 10, epoch=new)
    stats = restarted.stats()
    assert stats["weight_store_restarts"] == 1 and stats["weight_publishes"] == 2
    assert stats["weight_publishes_refused"] == 2 and stats["weight_generation"] == 2
    assert restarted.pull_if_newer(1, 5) == (2, 6, ["next"])  # scorers pull the first weights after the restart
