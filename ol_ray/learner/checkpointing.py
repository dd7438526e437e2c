"""How a learner saves itself and comes back: the newest readable checkpoint restored whole (model, optimizer,
schedule, RNG states, counters, ledger, buffered candidates, strategy and policy state, stream cursor), and a
checkpoint written at a window boundary. Kept apart from `ol_ray.learner.core` so that module reads as the loop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

import torch

from ol_ray.learner.candidates import CandidateBuffer
from ol_ray.learner.irreducible import holdout_start
from ol_ray.models.lora import check_resumable
from ol_ray.records import CheckpointRecord
from ol_ray.selection.config import uses_rho_loss
from ol_ray.state.checkpoint import (CheckpointError, checkpoints_newest_first, folder_mb, load_checkpoint,
                                     save_checkpoint)
from ol_ray.state.contract import load_parts, save_parts
from ol_ray.state.fit import check_state_fits, component_names, saved_parts
from ol_ray.state.ledger import Ledger

logger = logging.getLogger(__name__)
MEMORY_CEILING = "learner_memory.json"  # a micro-batch ceiling that outlives the learner group's restart


def save_memory_ceiling(run_dir: str, ceiling: int) -> None:
    """Before a learner group that ran out of memory where it could not retry restarts: the micro-batch ceiling
    the restarted group starts under (a checkpoint's own ceiling predates the failure)."""
    with open(os.path.join(run_dir, MEMORY_CEILING), "w", encoding="utf-8") as handle:
        json.dump({"micro_batch_samples": ceiling}, handle)


def carried_memory_ceiling(learner: Any) -> None:
    """The lower of the learner's ceiling and one a failed group left for it (`save_memory_ceiling`)."""
    path = os.path.join(learner.run_dir, MEMORY_CEILING) if learner.run_dir else ""
    if not path or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        carried = int(json.load(handle)["micro_batch_samples"])
    if learner.oom_ceiling is None or carried < learner.oom_ceiling:
        logger.warning("ol_ray: the learner group ran out of memory before it restarted; micro-batches of at most %d "
                       "samples from here", carried)
        learner.oom_ceiling = carried


def restore_newest(learner: Any) -> bool:
    """Load the newest readable checkpoint of the run directory, if any. Only an unreadable one (a file missing,
    truncated or failing its checksum: CheckpointError) is skipped for the one before; any other failure (a
    code error, CUDA, out of memory) fails the restore. When checkpoints exist and none is readable, the learner
    starts over only with checkpoint.start_over_if_unreadable."""
    if not learner.run_dir:
        return False
    unreadable = []
    for path in checkpoints_newest_first(os.path.join(learner.run_dir, "checkpoints")):
        try:
            state, training_state, candidates = load_checkpoint(path)
        except CheckpointError as error:
            logger.warning("ol_ray: cannot resume from %s (%s); trying an older checkpoint", path, error)
            unreadable.append(str(error))
            continue
        check_resumable(os.path.join(path, "model"), learner.cfg.model)  # a config mismatch is no corrupt file
        check_state_fits(learner.cfg, state, learner.strategy, learner.policy)
        load_into(learner, path, state, training_state, candidates)
        return True
    if unreadable and not learner.cfg.checkpoint.start_over_if_unreadable:
        raise CheckpointError(f"no checkpoint in {learner.run_dir} is readable ({'; '.join(unreadable)}); to "
                              f"start this run over from the configured model, set "
                              f"checkpoint.start_over_if_unreadable=true")
    if unreadable:
        logger.warning("ol_ray: no readable checkpoint in %s; starting from the beginning, as "
                       "checkpoint.start_over_if_unreadable asks", learner.run_dir)
    # rho_loss: the stream starts after the irreducible-loss model's holdout
    holdout = holdout_start(learner.run_dir) if uses_rho_loss(learner.cfg.selection) else None
    learner.cursor = holdout["cursor"] if holdout else None
    learner.rewind_ledger_log()  # a restart before any checkpoint: everything trained so far is replayed
    return False


def load_into(learner: Any, path: str, state: dict[str, Any], training_state: dict[str, Any],
                     candidates: dict[str, Any]) -> None:
    """Take every part's state from a checkpoint that was read whole."""
    learner._build(os.path.join(path, "model"))
    learner.optimizer.load_state_dict(training_state["optimizer"])
    learner.scheduler.load_state_dict(training_state["scheduler"])
    torch.set_rng_state(training_state["torch_rng"])
    if "cuda_rng" in training_state and learner.device.type == "cuda":
        torch.cuda.set_rng_state_all(training_state["cuda_rng"])
    if learner.continual.ewc is not None and "ewc" in training_state:
        learner.continual.ewc.load_state_dict(training_state["ewc"], learner.device)
    learner.rng.bit_generator.state = state["selection_rng"]
    parts = dict(saved_parts(state))
    if "continual" in parts:  # the replay buffer's samples are saved beside state.json, not in it
        parts["continual"] = {**parts["continual"], "replay_columns": state.get("replay_columns")}
    load_parts(learner.stateful_parts(), parts)
    learner.oom_ceiling = state.get("oom_ceiling")
    learner.memory_per_sample.extend(state.get("memory_per_sample", []))
    learner.updates = learner.updates_at_checkpoint = state["updates"]
    learner.counts = state["counts"]
    for key in ("labels_received", "labels_trained"):  # absent in checkpoints from before the label counts
        learner.counts.setdefault(key, [0] * learner.classes)
    learner.staleness_sum, learner.staleness_max = state["staleness_sum"], state["staleness_max"]
    learner.score_version_max = state["score_version_max"]
    learner.last_eval = state["last_eval"]
    learner.ledger = Ledger.from_json(state["ledger"], state.get("arrays", {}).get("seen_ids"),
                                   learner.cfg.learner.duplicate_window)
    learner.cursor, learner.windows_done = state["cursor"], state["windows_done"]
    learner.buffer = CandidateBuffer(candidates)
    learner.checkpoint_path = learner.restored_from = path
    learner.rewind_ledger_log()


def save(learner: Any) -> dict[str, Any]:
    """Checkpoint every part of the learner; the checkpoint record for metrics.jsonl."""
    started = time.perf_counter()
    if not learner.run_dir:
        return CheckpointRecord(update=learner.updates, time=time.time(), path=None, cursor=learner.cursor).to_json()
    candidates = learner.buffer.columns()
    state = {
        "updates": learner.updates, "counts": learner.counts, "staleness_sum": learner.staleness_sum,
        "staleness_max": learner.staleness_max, "score_version_max": learner.score_version_max,
        "last_eval": learner.last_eval, "ledger": learner.ledger.to_json(), "cursor": learner.cursor,
        "windows_done": learner.windows_done, "selection_rng": learner.rng.bit_generator.state,
        "parts": save_parts(learner.stateful_parts()),
        "oom_ceiling": learner.oom_ceiling, "memory_per_sample": list(learner.memory_per_sample),
        **component_names(learner.cfg),
    }
    training_state = {"optimizer": learner.optimizer_state(), "scheduler": learner.scheduler.state_dict(),
                      "torch_rng": torch.get_rng_state()}
    if learner.device.type == "cuda":
        training_state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if learner.continual.ewc is not None:
        training_state["ewc"] = learner.continual.ewc.state_dict()
    replay = learner.continual.replay
    learner.checkpoint_path = save_checkpoint(
        os.path.join(learner.run_dir, "checkpoints"), learner.updates, learner.model, learner.tokenizer,
        training_state, candidates, state, learner.cfg.checkpoint.keep, {"seen_ids": learner.ledger.seen.hashes()},
        replay.columns() if replay is not None else None)
    learner.updates_at_checkpoint = learner.updates
    learner.changed_since_checkpoint = False
    with contextlib.suppress(FileNotFoundError):  # the checkpoint carries a failed group's ceiling from now on
        os.remove(os.path.join(learner.run_dir, MEMORY_CEILING))
    return CheckpointRecord(
        update=learner.updates, time=time.time(), path=learner.checkpoint_path, cursor=learner.cursor,
        checkpoint_s=time.perf_counter() - started, checkpoint_mb=folder_mb(learner.checkpoint_path),
        state_mb=os.path.getsize(os.path.join(learner.checkpoint_path, "state.json")) / 2**20).to_json()
