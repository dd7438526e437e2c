"""The eval and output sections: evaluation sets and what a run writes (`ol_ray.observe`)."""

from __future__ import annotations

from dataclasses import dataclass

from ol_ray.data.config import DomainConfig
from ol_ray.errors import ConfigError, require


@dataclass(frozen=True)
class EvalConfig:
    path: str = ""  # dev set file (same format and fields as the stream); empty = no evaluation
    every_updates: int = 100  # evaluate every this many updates, and once at the end
    at_start: bool = True  # also evaluate the starting model, before any update
    batch_size: int = 128  # samples per evaluation forward pass (a causal LM's: within scoring.micro_batch_tokens)
    max_samples: int = 0  # evaluate on at most this many dev rows; 0 = all
    skip: int = 0  # leave out this many dev rows first: a file's tail as the dev set while the stream reads its head
    hub_split: str = "validation"  # split of stream.hub_dataset used when `path` does not exist (hub_fallback)
    # more evaluation sets (one per domain), all evaluated on schedule: the accuracy matrix and continual metrics
    sets: tuple[DomainConfig, ...] = ()


@dataclass(frozen=True)
class OutputConfig:
    run_dir: str = "runs/{name}-{time}"  # where metrics, quarantine, checkpoints and summary go
    name: str = "run"  # fills {name} in run_dir
    progress: bool = True  # show a progress bar on the console
    monitor_every_s: float = 5.0  # write the resource monitor's snapshot to metrics.jsonl this often
    tensorboard: bool = False  # also write the metrics as TensorBoard event files to <run_dir>/tensorboard
    mlflow_tracking_uri: str = ""  # log params, metrics and the report to MLflow: a folder (mlruns), a database or
    #   a server URL; "" = no MLflow
    mlflow_experiment: str = "ol_ray"  # the MLflow experiment runs are logged in


def check_eval(e: EvalConfig) -> None:
    """The eval section's own rules."""
    require(e.max_samples >= 0, f"eval.max_samples must be 0 (all) or positive; got {e.max_samples}")
    require(e.skip >= 0, f"eval.skip must not be negative; got {e.skip}")
    require(e.every_updates >= 1, f"eval.every_updates must be at least 1; got {e.every_updates}")
    require(e.batch_size >= 1, f"eval.batch_size must be at least 1; got {e.batch_size}")


def check_output(o: OutputConfig) -> None:
    """The output section's own rules."""
    try:
        o.run_dir.format(name="x", time="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"output.run_dir may only use the placeholders {{name}} and {{time}}; got "
                          f"{o.run_dir!r}") from None
    require(o.monitor_every_s > 0, f"output.monitor_every_s must be positive; got {o.monitor_every_s}")
    require(not o.mlflow_tracking_uri or bool(o.mlflow_experiment),
            "output.mlflow_experiment must name the MLflow experiment for output.mlflow_tracking_uri")
