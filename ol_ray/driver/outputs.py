"""What a run writes as it goes and at its end: metrics.jsonl (rewound with the learner on a resume), the progress bar,
error.log, accuracy_matrix.csv and the summary."""

from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from tqdm import tqdm

from ol_ray.config import to_dict
from ol_ray.config.schema import Config
from ol_ray.driver.admission import staleness_bound
from ol_ray.jsonl import read_jsonl
from ol_ray.learner.irreducible import holdout_start
from ol_ray.observe.evaluation import headline
from ol_ray.records import ResumeRecord, RunSummary
from ol_ray.scoring.pool import columns_needed
from ol_ray.selection.config import uses_rho_loss


class RunOutputs:
    """metrics.jsonl, the console progress bar, the trackers (TensorBoard, MLflow: `ol_ray.observe.tracking`, each
    with write, rewind and close) and whoever else follows the records (`followers`, called with each list of records
    once they are written: the Kafka group committer)."""

    def __init__(self, run_dir: str, total: Optional[int], progress: bool,
                 followers: Sequence[Callable[[list[dict[str, Any]]], None]] = (), trackers: Sequence[Any] = ()):
        self.run_dir, self.followers, self.trackers = run_dir, followers, trackers
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.metrics = open(self.path, "a", encoding="utf-8")
        self.samples_read = 0
        self.samples_trained = 0
        self.dev_figure: tuple[str, Optional[float]] = ("dev_accuracy", None)
        self.bar = None
        if progress:
            self.bar = tqdm(total=total, unit="sample", desc="read", dynamic_ncols=True)

    def rewind(self, point: dict[str, Any]) -> None:
        """Continue from where the learner stands (a checkpoint, or the start): reset the counters to it, keep the
        records up to its update and note the resume (no records: a fresh run, nothing to rewrite)."""
        self.samples_read = point["samples_read"]
        if self.bar is not None:
            self.bar.n = self.samples_read
            self.bar.refresh()
        if os.path.getsize(self.path) == 0:
            return
        self.metrics.close()
        for tracker in self.trackers:
            tracker.rewind(point)
        kept = kept_records(read_jsonl(self.path), point)
        with open(self.path + ".tmp", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(self.path + ".tmp", self.path)
        self.metrics = open(self.path, "a", encoding="utf-8")
        self.write([ResumeRecord(update=point["updates"], time=time.time(),
                                 restored_from=point["restored_from"]).to_json()])

    def window_read(self, size: int) -> None:
        self.samples_read += size
        if self.bar is not None:
            self.bar.update(size)

    def write(self, records: list[dict[str, Any]]) -> None:
        records = [{**record, "samples_read": self.samples_read} for record in records]
        for record in records:
            self.metrics.write(json.dumps(record) + "\n")
            if record["kind"] == "update":
                self.samples_trained = record["samples_trained"]
            elif record["kind"] == "eval":
                self.dev_figure = headline(record)
        self.metrics.flush()
        for follower in self.followers:
            follower(records)
        for tracker in self.trackers:
            tracker.write(records)
        if self.bar is not None and records:
            postfix = {"trained": self.samples_trained}
            name, value = self.dev_figure
            if value is not None:
                postfix[{"dev_accuracy": "dev_acc", "dev_perplexity": "dev_ppl"}[name]] = f"{value:.4f}"
            self.bar.set_postfix(postfix)

    def close(self, ok: bool = True) -> None:
        """Close the files; the trackers log the run's end (its summary and report, with `ok`)."""
        self.metrics.close()
        if self.bar is not None:
            self.bar.close()
        for tracker in self.trackers:
            tracker.close(self.run_dir, ok)


def kept_records(records: list[dict[str, Any]], point: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics.jsonl records a resume keeps: up to the record of the checkpoint it restored (records written
    after it, even at the same update number, such as a phase's start or a drift, are written again as the stream
    is replayed). Without a checkpoint the learner starts over (its start evaluation included), so nothing is kept."""
    if point.get("restored_from"):
        for index, record in enumerate(records):
            if record["kind"] == "checkpoint" and record.get("path") == point["restored_from"]:
                return records[:index + 1]
    return []


def write_traceback(run_dir: str, error: BaseException) -> str:
    """Append the driver's traceback of a failed run to <run_dir>/error.log (the console gets one line); returns
    the file's path."""
    path = os.path.join(run_dir, "error.log")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.writelines(traceback.format_exception(error))
    return path


def write_accuracy_matrix(path: str, history: list[dict[str, Any]]) -> None:
    """accuracy_matrix.csv: one row per evaluation (update, samples trained, phase), one accuracy column per
    evaluation set (and balanced accuracy where it applies). Nothing when the run evaluated nothing."""
    import csv

    if not history:
        return
    names = list(history[0]["accuracy"])
    balanced = list(history[0].get("balanced_accuracy", {}))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["update", "samples_trained", "phase", *names, *(f"{name}_balanced" for name in balanced)])
        for entry in history:
            writer.writerow([entry["update"], entry["samples_trained"], entry["phase"] or "",
                             *(entry["accuracy"].get(name) for name in names),
                             *(entry.get("balanced_accuracy", {}).get(name) for name in balanced)])


def summarize(cfg: Config, started: float, info: dict[str, Any], samples_read: int, stream_cursor: dict[str, Any],
              restarts: int, learner: dict[str, Any], quarantine: dict[str, Any], weights: dict[str, Any],
              scorer_nodes: list[str], scorers: int) -> RunSummary:
    """The run's summary: the ledger and its identity, the final evaluation, throughput and where things went."""
    wall = time.time() - started
    totals = learner["ledger_totals"]
    accounted = totals["quarantined"] + totals["not_selected"] + totals["trained"] + totals["nonfinite"]
    evaluation = {"dev_accuracy": None, "dev_loss": None, "dev_macro_f1": None,  # a classifier's; a causal LM's too
                  **{"dev_" + name: value for name, value in learner["last_eval"].items() if name != "update"}}
    return RunSummary(
        run_dir=cfg.output.run_dir, samples_read=samples_read, samples_trained=learner["samples_trained"],
        samples_not_selected=learner["samples_not_selected"], samples_nonfinite=learner["samples_nonfinite"],
        samples_trained_twice=learner["samples_trained_twice"],
        accounting_ok=(learner["ledger_balanced"] and totals["read"] == samples_read == accounted
                       and totals["quarantined"] == quarantine["samples_quarantined"]),
        ledger=totals, updates=learner["updates"], nonfinite_updates=learner["nonfinite_updates"],
        oom_retries=learner["oom_retries"], labels_received=learner["labels_received"],
        labels_trained=learner["labels_trained"], memory_ceiling=learner["memory_ceiling"],
        windows=learner["windows_done"], learner_restarts=restarts, restored_from=info.get("restored_from"),
        wall_s=wall, trained_samples_per_s=learner["samples_trained"] / wall if wall > 0 else 0.0,
        staleness_mean=learner["staleness_mean"], staleness_max=learner["staleness_max"],
        staleness_bound=staleness_bound(cfg.scoring.max_lead_updates, cfg.learner.publish_every),
        score_version_max=learner["score_version_max"], text_truncated=learner["text_truncated"],
        tokens_truncated=learner["tokens_truncated"], learner_utilisation=learner["learner_utilisation"],
        first_update_s=learner["first_update_s"], eval_rows_rejected=learner["eval_rows_rejected"],
        cursor=learner["cursor"], prequential_source=learner["prequential_source"],
        scored=bool(columns_needed(cfg)), files_rejected=stream_cursor.get("rejected", []),
        learner_device=info["device"], learner_node=info["node_id"], model_parameters=info["parameters"],
        samples_holdout=(holdout_start(cfg.output.run_dir) or {}).get("read", 0) if uses_rho_loss(cfg.selection)
        else 0,
        checkpoint=learner.get("checkpoint_path"), learner_ranks=learner.get("learner_ranks", 1),
        scorer_nodes=scorer_nodes, scorers=scorers, config=to_dict(cfg),
        quarantine=quarantine, weights=weights, evaluation=evaluation, continual=learner.get("continual", {}))
