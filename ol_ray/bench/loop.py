"""The plain single-process loop the learning benchmarks share: the configured stream, scored with the learner's
current weights, fed to the learner's own code (`OnlineLearner`: batch policy, selection, weighted update,
evaluation), no Ray. Scores are fresh (no staleness): what a strategy or policy can do at best. Like the pipeline's
scorers, it computes only the statistics the strategy and policy read, none for random selection.

`read_stream` reads and tokenizes the stream's head once per seed; `run_plain` runs one configuration on it and
returns its evaluations and updates with wall-clock times.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import numpy as np

from ol_ray.config.schema import Config


@dataclasses.dataclass
class Stream:
    input_ids: list[np.ndarray]
    labels: np.ndarray
    sample_ids: np.ndarray


def read_stream(cfg: Config, count: int, label_noise: float, seed: int) -> Stream:
    """The first `count` valid rows of the configured stream (fewer if it ends), tokenized, with `label_noise` of
    their labels moved to another class (seeded)."""
    from ol_ray.learner.irreducible import read_head

    head = read_head(cfg, count, until_valid=True)
    labels = head.labels
    if label_noise > 0:
        rng = np.random.default_rng(10_000 + seed)
        flip = rng.random(len(labels)) < label_noise
        shift = rng.integers(1, cfg.model.num_labels, size=len(labels))
        labels = np.where(flip, (labels + shift) % cfg.model.num_labels, labels)
    return Stream(head.input_ids, labels, head.sample_ids)


def scored_pool(learner: Any, head: Any, input_ids: list[np.ndarray], labels: np.ndarray, sample_ids: np.ndarray,
                window: int = 0, micro_batch_tokens: int = 0, columns: Optional[tuple[str, ...]] = None,
                precision: str = "fp32") -> dict[str, np.ndarray]:
    """Candidates as a scorer hands them to the learner: the columns, scored with the learner's current weights
    (the statistics in `columns`, None: all; () leaves them unscored, as the pipeline does for random selection)."""
    from ol_ray.tasks.classification import score_samples

    size = len(labels)
    pool = {"sample_id": sample_ids, "label": labels, "window": np.full(size, window, np.int64),
            "input_ids": np.array(input_ids + [None], dtype=object)[:-1]}
    if columns != ():
        pool["weight_version"] = np.full(size, learner.updates, dtype=np.int64)
        pool.update(score_samples(learner.model, head, input_ids, labels, learner.pad_id, learner.device, precision,
                                  micro_batch_tokens, columns))
    return pool


def run_plain(cfg: Config, stream: Stream, chunk: int, max_updates: int = 0, max_samples: int = 0,
              eval_every_samples: int = 0, dev: Optional[Stream] = None, started: Optional[float] = None,
              run_dir: Optional[str] = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed the stream in chunks of `chunk` candidates, each scored with the learner's weights as it arrives, until
    `max_updates` updates or `max_samples` trained samples (or the stream's end). The learner evaluates on its
    own schedule (eval.every_updates); with `eval_every_samples`, also each time that many more samples have been
    trained. Returns the evaluation and update records, each with `wall_s` since the start (evaluations included),
    which is `started` (a `time.perf_counter()` reading) when given, else after the model has loaded.
    `dev` replaces the configured dev set; with `run_dir` the learner writes its ledger there (which samples each
    update trained, as a pipeline run's ledger.jsonl says it). rho_loss first trains its irreducible-loss model on
    the stream's first `selection.holdout_size` rows, which the run then skips.

    Long because it is the baseline the pipeline is measured against, kept in one piece so it can be read
    next to `ol_ray.driver.pipeline` and seen to do the same work.
    """
    from ol_ray.learner.core import OnlineLearner
    from ol_ray.learner.irreducible import train_irreducible
    from ol_ray.models.loading import device_for, head_layer, load_model, load_numpy_state
    from ol_ray.observe.monitor import process_rss_mb
    from ol_ray.scoring.pool import columns_needed
    from ol_ray.selection.config import uses_rho_loss
    from ol_ray.tasks.classification import score_samples

    start, irreducible = 0, None
    if uses_rho_loss(cfg.selection):
        start = cfg.selection.holdout_size
        irreducible = load_model(cfg.model, pretrained=False)
        load_numpy_state(irreducible, train_irreducible(cfg, stream.input_ids[:start], stream.labels[:start]))
        irreducible.to(device_for(cfg.learner.num_gpus)).eval()
    learner = OnlineLearner(cfg, run_dir)
    if dev is not None:
        from ol_ray.observe.evaluation import EvalSet

        order = np.argsort([len(ids) for ids in dev.input_ids], kind="stable")
        learner.eval_set = EvalSet([dev.input_ids[i] for i in order], dev.labels[order], 0, cfg.model.kind)
        learner.start_records = [learner.run_evaluation()]
    head = head_layer(learner.model, cfg.model.num_labels)
    columns = columns_needed(cfg)  # what the pipeline's scorers would compute: nothing for random selection
    started = time.perf_counter() if started is None else started
    evals: list[dict[str, Any]] = []  # the first add_candidates hands over the evaluation at update 0 too
    updates: list[dict[str, Any]] = []
    next_eval = eval_every_samples

    def trained() -> int:
        return learner.ledger.totals()["trained"]

    def running() -> bool:
        return not ((max_updates and learner.updates >= max_updates) or (max_samples and trained() >= max_samples))

    def keep(records: list[dict[str, Any]]) -> None:
        for record in records:
            elapsed = round(time.perf_counter() - started, 3)
            if record["kind"] == "eval":
                evals.append(dict(record, wall_s=0.0 if record["update"] == 0 else elapsed))
            elif record["kind"] == "update":
                updates.append(dict(record, wall_s=elapsed, rss_mb=process_rss_mb()))

    while running() and start + chunk <= len(stream.labels):
        part = slice(start, start + chunk)
        ids, labels = stream.input_ids[part], stream.labels[part]
        pool = scored_pool(learner, head, ids, labels, stream.sample_ids[part],
                           micro_batch_tokens=cfg.scoring.micro_batch_tokens, columns=columns,
                           precision=cfg.scoring.precision)
        if irreducible is not None:
            pool["irreducible_loss"] = score_samples(irreducible, head_layer(irreducible, cfg.model.num_labels), ids,
                                                     labels, learner.pad_id, learner.device,
                                                     micro_batch_tokens=cfg.scoring.micro_batch_tokens)["loss"]
        keep(learner.add_candidates(pool))
        if eval_every_samples and trained() >= next_eval and learner.eval_set is not None:
            keep([learner.run_evaluation()])
            next_eval = (trained() // eval_every_samples + 1) * eval_every_samples
        start += chunk
    if eval_every_samples and learner.eval_set is not None and evals and evals[-1]["update"] != learner.updates:
        keep([learner.run_evaluation()])
    return evals, updates
