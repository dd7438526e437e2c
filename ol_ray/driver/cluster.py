"""Ray for a run: start or join it, check it has what the run asks for, and start the run's actors (the small ones
pinned to this node, the learner where its resources are, the scorer pool spread over the nodes), found by name."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from ol_ray.batching.base import POLICIES
from ol_ray.config.schema import Config
from ol_ray.data.quarantine import QuarantineSink
from ol_ray.driver.feeding import PipelineError, one_line
from ol_ray.learner.actor import LearnerActor
from ol_ray.observe.monitor import ResourceMonitor
from ol_ray.scoring.pool import ScorerPool, columns_needed
from ol_ray.scoring.scorer import Scorer
from ol_ray.selection.base import STRATEGIES
from ol_ray.weights.store import WeightStore

NAMESPACE = "ol_ray"  # the Ray namespace of a run this process connects: its actors are found there by name

logger = logging.getLogger(__name__)
RESTART_POLL_S = 0.2  # while Ray restarts the learner actor, ask for its info again this often


def joins_a_cluster(cfg: Config) -> bool:
    """Whether the run joins an existing Ray (ray.address, or RAY_ADDRESS as `ray job submit` sets it) rather than
    starting a local one."""
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def start_ray(cfg: Config) -> bool:
    """Connect to the configured cluster (or RAY_ADDRESS, as `ray job submit` sets it), else start a local Ray with
    its dashboard on loopback. Returns whether this call connected or started Ray (and so should disconnect)."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    else:  # "local": a Ray of our own, even where `ray start` left a cluster running on this machine
        ray.init(address="local", namespace=NAMESPACE, num_cpus=cfg.ray.num_cpus,
                 object_store_memory=cfg.ray.object_store_mb * 2**20 if cfg.ray.object_store_mb else None,
                 include_dashboard=cfg.ray.include_dashboard, dashboard_host="127.0.0.1", log_to_driver=True)
    return True


def check_resources(cfg: Config, strict: bool) -> None:
    """Compare what the learner and scorers ask for with what the cluster has: an error on a Ray this run started
    (nothing will add resources), a warning on a cluster (an autoscaler may)."""
    have = ray.cluster_resources()
    ranks = cfg.learner.num_workers  # a data-parallel learner's ranks all start together
    wants = {"CPU": max(ranks * cfg.learner.num_cpus, cfg.scoring.num_cpus),
             "GPU": max(ranks * cfg.learner.num_gpus, cfg.scoring.num_gpus)}
    for name, amount in [*((name, ranks * amount) for name, amount in cfg.learner.resources.items()),
                         *cfg.scoring.resources.items()]:
        wants[name] = max(wants.get(name, 0), amount)
    for resource, amount in wants.items():
        if amount > have.get(resource, 0):
            message = (f"the learner or scorers ask for {amount:g} {resource} but the Ray cluster has "
                       f"{have.get(resource, 0):g}; change the learner's or scoring's num_cpus / num_gpus / "
                       f"resources, or add nodes that have it")
            if strict:
                raise PipelineError(message)
            logger.warning("ol_ray: %s", message)


def actor_name(role: str, run_dir: str) -> str:
    """The name of a run's actor (learner, weights, monitor, quarantine), so operators and tests can find it with
    ray.get_actor."""
    return f"ol_ray_{role}:{run_dir}"


def learner_actor_name(run_dir: str) -> str:
    return actor_name("learner", run_dir)


def start_actors(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Weight store, resource monitor and quarantine sink (small, CPU-free, on this node, restarted whenever they
    die) and the learner, which restarts up to learner.max_restarts times and restores the newest checkpoint."""
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    # restarted by Ray whenever they die, their calls retried: each recovers its state from the run directory
    # (the quarantine from its file, the store's fence and counters from its state file, its weights at the
    # learner's next publish; the monitor's readings within a second)
    small = {"num_cpus": 0, "scheduling_strategy": here, "max_restarts": -1, "max_task_retries": -1}
    store_state = os.path.join(run_dir, "weight_store.json")
    if os.path.exists(store_state):  # a store's state is its own run's (this driver's); a resume starts a new one
        os.remove(store_state)
    actors: dict[str, Any] = {
        "weights": ray.remote(WeightStore).options(name=actor_name("weights", run_dir), **small).remote(store_state),
        "monitor": ray.remote(ResourceMonitor).options(name=actor_name("monitor", run_dir), **small).remote(
            path=os.path.join(run_dir, "monitor.jsonl"), export=True),
    }
    actors["quarantine"] = ray.remote(QuarantineSink).options(name=actor_name("quarantine", run_dir), **small).remote(
        os.path.join(run_dir, "quarantine.jsonl"), actors["monitor"])
    placement = learner_placement(cfg)
    where = {} if placement is None else {"scheduling_strategy": PlacementGroupSchedulingStrategy(
        placement, placement_group_bundle_index=0)}
    actors["learner"] = ray.remote(LearnerActor).options(
        num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus, resources=cfg.learner.resources or None,
        max_restarts=cfg.learner.max_restarts, name=learner_actor_name(run_dir), **where).remote(
        cfg, run_dir, actors["weights"], actors["monitor"], actors["quarantine"], component_entries(cfg), placement)
    if placement is not None:
        actors["learner_placement"] = placement
    return actors


def learner_placement(cfg: Config) -> Any:
    """With learner.num_workers N > 1, a placement group of N bundles, each with what one learner rank asks for,
    placed by learner.placement_strategy: the group's ranks start together or not at all, and a restarted rank 0
    finds its workers' places kept. None for one learner."""
    lcfg = cfg.learner
    if lcfg.num_workers == 1:
        return None
    bundle = {name: amount for name, amount in {"CPU": lcfg.num_cpus, "GPU": lcfg.num_gpus, **lcfg.resources}.items()
              if amount > 0}
    return placement_group([bundle] * lcfg.num_workers, strategy=lcfg.placement_strategy,
                           name=actor_name("learner_group", cfg.output.run_dir))


def stop_actors(actors: dict[str, Any]) -> None:
    """Kill the run's actors (the learner's group workers die with it) and free the learner's placement group."""
    for name, actor in actors.items():
        if name == "learner_placement":
            remove_placement_group(actor)
        else:
            ray.kill(actor)


def component_entries(cfg: Config) -> dict[str, dict[str, Any]]:
    """The factories of the strategies and policies the config names, for the learner's process to adopt: a
    plug-in registered in this process works there too."""
    strategies = [cfg.selection.strategy, *cfg.selection.mix]
    policies = [cfg.batching.policy, *cfg.batching.policies]
    return {"strategies": STRATEGIES.entries(strategies), "policies": POLICIES.entries(policies)}


def wait_for_learner(learner: Any, cfg: Config) -> dict[str, Any]:
    """The learner's info once it has started (or restarted and restored its checkpoint): a call made while Ray
    restarts the actor is made again."""
    deadline = time.monotonic() + cfg.learner.start_timeout_s
    try:
        while True:
            try:
                return ray.get(learner.info.remote(), timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise ray.exceptions.GetTimeoutError() from None
                time.sleep(RESTART_POLL_S)
    except ray.exceptions.GetTimeoutError:
        raise PipelineError(f"the learner actor did not start within {cfg.learner.start_timeout_s:g} s "
                            f"(learner.num_cpus={cfg.learner.num_cpus:g}, learner.num_gpus={cfg.learner.num_gpus:g}; "
                            f"the cluster has {ray.cluster_resources()})") from None
    except ray.exceptions.RayError as error:
        raise PipelineError(f"the learner actor failed: {one_line(error)}") from None


def start_scorers(cfg: Config, actors: dict[str, Any], irreducible: Any = None) -> Any:
    """The run's scorer pool: `scoring.num_scorers` actors spread over the nodes that have what they ask for,
    restarted by Ray when one dies (and the chunk it held retried). With random selection they validate and
    tokenize only (no model)."""
    sc = cfg.scoring
    columns = columns_needed(cfg)
    options = ray.remote(Scorer).options(num_cpus=sc.num_cpus, num_gpus=sc.num_gpus if columns else 0,
                                         resources=sc.resources or None, max_restarts=-1, max_task_retries=-1,
                                         scheduling_strategy="SPREAD")

    def make_scorer() -> Any:
        return options.remote(cfg, actors["weights"], actors["monitor"], actors["quarantine"], irreducible, columns)

    return ScorerPool(make_scorer, sc.num_scorers, sc.max_scorers, sc.chunks_per_scorer)
