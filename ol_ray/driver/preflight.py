"""Before Ray starts: paths made absolute, and every input checked (stream, dev sets, model, run directory, resume
state), so a run that cannot work fails in one sentence."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional, Sequence

from ol_ray.config.schema import Config
from ol_ray.data.factory import make_source
from ol_ray.data.source import SourceError
from ol_ray.driver.feeding import PipelineError
from ol_ray.models.loading import check_model
from ol_ray.observe.evaluation import check_eval_sets
from ol_ray.observe.tracking import is_folder
from ol_ray.state.checkpoint import latest_checkpoint, newest_readable_state
from ol_ray.state.fit import check_state_fits


def resolve_paths(cfg: Config, base: Optional[str] = None) -> Config:
    """Make data, dev-set and run-directory paths absolute (against the working directory), so actors on other
    processes or nodes read the same files."""
    base = base or os.getcwd()

    def absolute(path: str) -> str:
        return path if not path or os.path.isabs(path) else os.path.normpath(os.path.join(base, path))

    phases = tuple(dataclasses.replace(phase, path=absolute(phase.path)) for phase in cfg.stream.phases)
    stream = dataclasses.replace(cfg.stream, path=absolute(cfg.stream.path), phases=phases)
    sets = tuple(dataclasses.replace(domain, path=absolute(domain.path)) for domain in cfg.eval.sets)
    evaluation = dataclasses.replace(cfg.eval, path=absolute(cfg.eval.path), sets=sets)
    name_or_path = cfg.model.name_or_path
    if os.path.exists(os.path.join(base, name_or_path)):
        name_or_path = absolute(name_or_path)
    model = dataclasses.replace(cfg.model, name_or_path=name_or_path)
    run_dir = cfg.output.run_dir.format(name=cfg.output.name, time=time.strftime("%Y%m%d-%H%M%S"))
    tracking = cfg.output.mlflow_tracking_uri
    output = dataclasses.replace(cfg.output, run_dir=absolute(run_dir),
                                 mlflow_tracking_uri=absolute(tracking) if is_folder(tracking) else tracking)
    return dataclasses.replace(cfg, stream=stream, eval=evaluation, model=model, output=output)


def preflight(cfg: Config, rows: Optional[Sequence[dict[str, Any]]], resume: bool) -> None:
    """Fail before Ray starts, in one sentence, on a missing stream, dev set or model, an evaluation set that does
    not parse with the configured fields, a run directory that
    already holds another run (resuming one without a checkpoint starts it over), or a resume whose config cannot
    take the checkpoint's strategy or policy state."""
    try:
        source = make_source(cfg.stream, rows=rows)  # opens the file, folder, dataset or Kafka topics, or says why
        getattr(source, "close", lambda: None)()
        check_eval_sets(cfg)  # exists, and parses with the configured fields
    except SourceError as error:
        if "does not exist" not in str(error):
            raise
        raise SourceError(f"{error} (relative paths in a config resolve against the working directory, "
                          f"{os.getcwd()}; under `ray job submit --working-dir` that is the job's own copy of it, "
                          f"so give absolute paths on storage the head node reads"
                          + (", or set stream.hub_fallback=true to read stream.hub_dataset from the hub"
                             if cfg.stream.hub_dataset and not cfg.stream.hub_fallback else "") + ")") from None
    check_model(cfg.model)
    has_checkpoint = latest_checkpoint(os.path.join(cfg.output.run_dir, "checkpoints")) is not None
    if has_checkpoint and not resume:
        raise PipelineError(f"{cfg.output.run_dir} already holds a run: resume it with `ol-ray run --resume "
                            f"{cfg.output.run_dir}`, or set another output.run_dir")
    state = newest_readable_state(os.path.join(cfg.output.run_dir, "checkpoints")) if resume else None
    if state is not None:
        check_state_fits(cfg, state)
