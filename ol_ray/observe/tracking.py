"""Run tracking users already use: TensorBoard event files and MLflow runs, fed the records a run writes to
metrics.jsonl, by update.

- `output.tensorboard: true` writes event files to <run_dir>/tensorboard (`tensorboard --logdir runs` shows every
  run): per update the loss, batch size, pool size, staleness, throughput, learning rate, gradient norm, the label mix
  of the selected samples and the prequential figures; per evaluation every dev figure and every evaluation set's;
  the resource monitor's readings. A resume rewinds them with metrics.jsonl (events past the checkpoint are purged).
- `output.mlflow_tracking_uri` (a folder such as `mlruns`, or a tracking server's URL) logs an MLflow run named after
  the run directory in the experiment `output.mlflow_experiment`: the resolved config as params, the same metrics,
  and at the end summary.json, config.yaml and the run report (report.md and its charts, when matplotlib is
  installed) as artifacts. A resumed run continues its MLflow run (its id is kept in <run_dir>/mlflow_run_id); a
  replayed update logs its figures again at the same step.

Both need the `track` extra (`pip install 'ol_ray[track]'`: tensorboard, mlflow-skinny).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Iterator, Mapping, Optional

from ol_ray.errors import ConfigError

logger = logging.getLogger(__name__)

UPDATE_FIGURES = ("loss", "sample_loss_mean", "batch_size", "pool_size", "staleness_mean", "staleness_max",
                  "samples_per_s", "step_s", "lr", "grad_norm", "weight_mean", "weight_max", "samples_trained",
                  "samples_received", "replayed", "replay_loss_mean", "penalty", "noise_scale",
                  "memory_per_sample_mb", "prequential_accuracy", "prequential_accuracy_recent",
                  "prequential_balanced_accuracy", "prequential_loss", "target_tokens")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """The figures of one metrics.jsonl record as (tag, value): `train/...` per update, `dev/...` and `eval/<set>/...`
    per evaluation, `monitor/...` per resource reading; other kinds (checkpoints, drifts, ...) have none."""
    kind = record.get("kind")
    if kind == "update":
        for key in UPDATE_FIGURES:
            value = _number(record.get(key))
            if value is not None:
                yield f"train/{key}", value
        labels = record.get("selected_labels") or []
        total = sum(labels)
        for label, count in enumerate(labels if total else []):
            yield f"selection/label_{label}_share", count / total
    elif kind == "eval":
        for key, value in record.items():
            if key.startswith("dev_") and _number(value) is not None:
                yield f"dev/{key.removeprefix('dev_')}", float(value)
        for name, figures in (record.get("sets") or {}).items():
            for key, value in figures.items():
                if _number(value) is not None:
                    yield f"eval/{name}/{key}", float(value)
    elif kind == "monitor":
        for key, value in record.items():
            if key not in ("kind", "update", "time") and _number(value) is not None:
                yield f"monitor/{key}", float(value)


def _missing(package: str) -> ConfigError:
    return ConfigError(f"output tracking needs {package}: pip install 'ol_ray[track]'")


class TensorBoardTracker:
    """Event files in `folder`, one scalar per figure per update."""

    def __init__(self, folder: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.folder, self.make = folder, SummaryWriter
        self.writer = SummaryWriter(folder)

    def rewind(self, point: Mapping[str, Any]) -> None:
        """Continue after the checkpoint the run resumed from: events past it are purged (all, with none)."""
        self.writer.close()
        self.writer = self.make(self.folder, purge_step=point["updates"] + 1 if point.get("restored_from") else 0)

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            for tag, value in scalars(record):
                self.writer.add_scalar(tag, value, global_step=record.get("update", 0), walltime=record.get("time"))
        self.writer.flush()

    def close(self, run_dir: str, ok: bool) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run per ol_ray run, continued on resume."""

    def __init__(self, uri: str, experiment: str, run_dir: str, params: Mapping[str, Any]):
        try:
            import mlflow
        except ImportError:
            raise _missing("mlflow") from None
        from mlflow.entities import Metric

        if is_folder(uri):  # MLflow 3 keeps its folder store only on request; a folder is what was asked for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.metric, self.failures = Metric, 0
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        id_file = os.path.join(run_dir, "mlflow_run_id")
        if os.path.isfile(id_file):
            with open(id_file, encoding="utf-8") as handle:
                self.run_id = handle.read().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(experiment_id, run_name=os.path.basename(run_dir),
                                             tags={"ol_ray.run_dir": run_dir}).info.run_id
        with open(id_file, "w", encoding="utf-8") as handle:
            handle.write(self.run_id)
        for key, value in params.items():  # params are set once: a resume's overrides are in its config.yaml
            self.client.log_param(self.run_id, key, str(value)[:500])

    def rewind(self, point: Mapping[str, Any]) -> None:
        """Nothing to undo: MLflow keeps a metric's history, and replayed updates log at their own steps again."""

    def write(self, records: list[dict[str, Any]]) -> None:
        """Log the records' figures; a tracking server that fails is warned about (once), never fails the run."""
        metrics = [self.metric(tag, value, int(1000 * record.get("time", time.time())), record.get("update", 0))
                   for record in records for tag, value in scalars(record)]
        try:
            for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
                self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
        except Exception as error:  # the run's own records are in metrics.jsonl whatever MLflow does
            self.failures += 1
            if self.failures == 1:
                logger.warning("ol_ray: MLflow did not take the run's metrics (%s); metrics.jsonl has them", error)

    def close(self, run_dir: str, ok: bool) -> None:
        try:
            self._log_end(run_dir, ok)
        except Exception as error:
            logger.warning("ol_ray: MLflow did not take the run's end (%s); the run directory has it all", error)

    def _log_end(self, run_dir: str, ok: bool) -> None:
        for name in ("summary.json", "config.yaml"):
            if os.path.isfile(os.path.join(run_dir, name)):
                self.client.log_artifact(self.run_id, os.path.join(run_dir, name))
        if ok:
            try:
                from ol_ray.observe.report import write_report

                self.client.log_artifact(self.run_id, write_report(run_dir))
                self.client.log_artifacts(self.run_id, os.path.join(run_dir, "report"), "report")
            except ImportError:  # the report's charts need matplotlib (the bench extra)
                pass
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


def is_folder(uri: str) -> bool:
    """A tracking URI that is a local folder (no scheme): MLflow's file store."""
    return "://" not in uri and not uri.startswith(("file:", "sqlite:", "databricks", "postgresql:", "mysql:"))


def make_trackers(cfg: Any) -> list[Any]:
    """The trackers the output section asks for (none by default)."""
    trackers: list[Any] = []
    run_dir = cfg.output.run_dir
    if cfg.output.tensorboard:
        trackers.append(TensorBoardTracker(os.path.join(run_dir, "tensorboard")))
    if cfg.output.mlflow_tracking_uri:
        trackers.append(MLflowTracker(cfg.output.mlflow_tracking_uri, cfg.output.mlflow_experiment, run_dir,
                                      flat_params(dataclasses.asdict(cfg))))
    return trackers


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The resolved config as MLflow params: `section.key` -> value."""
    params: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value and prefix.count(".") < 1:
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = value
    return params
