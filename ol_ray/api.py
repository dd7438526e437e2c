"""`run` and `resume`: a pipeline from Python, as `ol-ray run` does it from the shell."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from ol_ray.config import Config, load_config, load_run_config
from ol_ray.driver.pipeline import run_pipeline
from ol_ray.records import RunSummary


def run(config: Config | str | os.PathLike, overrides: Sequence[str] = (),
        rows: Optional[Sequence[dict[str, Any]]] = None) -> RunSummary:
    """Run a pipeline to the end of its stream (or its sample budget, or learner.max_updates) and return its summary.

    `config` is a `Config` or a YAML file, `overrides` dotted `section.key=value` settings applied to it, `rows` the
    samples of a `stream.source: memory` run. Starts a local Ray unless one is running or `ray.address` (or
    RAY_ADDRESS) names a cluster, and shuts down only the Ray it started."""
    if isinstance(config, Config) and overrides:
        raise ValueError("overrides apply to a config file; change a Config with dataclasses.replace")
    cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
    return run_pipeline(cfg, rows=rows)


def resume(run_dir: str | os.PathLike, overrides: Sequence[str] = (),
           rows: Optional[Sequence[dict[str, Any]]] = None) -> RunSummary:
    """Continue the run in `run_dir` from its newest checkpoint, with its own config (and `overrides`, which the run
    keeps for its next resume)."""
    return run_pipeline(load_run_config(run_dir, list(overrides)), rows=rows, resume=True)
