"""The records parts hand each other and write to metrics.jsonl, each defined once as a frozen dataclass.

A record becomes one JSON line with `to_json()`: its `kind`, then its fields; optional fields (default None) left
unset are ones the run does not have (no replay, no phases, a causal LM's missing label mix) and are left out;
`extra` holds figures whose names depend on the run (the prequential figures, a dev set's metrics by name) and is
merged in. Readers (`ol_ray.observe.report`, the benchmarks) read the lines back as dicts keyed by these names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional


@dataclass(frozen=True)
class Record:
    kind: ClassVar[str] = ""
    update: int  # updates applied when the record was made (the one it is about, for update records)
    time: float  # wall-clock seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        """The metrics.jsonl line: kind, the fields that are set, then `extra`."""
        line = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (value is None and f.default is None):  # an optional field not set
                line[f.name] = value
        line.update(getattr(self, "extra", {}))
        return line


@dataclass(frozen=True)
class UpdateRecord(Record):
    """One applied weighted update."""

    kind: ClassVar[str] = "update"
    samples_received: int  # candidates the learner received so far
    samples_trained: int  # distinct samples trained so far (the ledger's count)
    samples_not_selected: int  # candidates read but not selected so far
    pool_size: int  # candidates this update selected from
    batch_size: int  # samples in this update, replayed ones included
    loss: float  # the weighted loss of the update
    weight_mean: float  # mean importance weight of the selected samples
    weight_max: float
    sample_loss_mean: float  # unweighted mean per-sample loss
    grad_norm: float  # gradient norm before clipping
    lr: float  # learning rate applied (schedule x batch-size scaling)
    weight_version: int  # the version published after this update
    staleness_mean: float  # updates between a sample's scoring weights and this update
    staleness_max: int
    step_s: float  # seconds of the step
    samples_per_s: float
    micro_batches: int
    phase: Optional[str] = None  # the stream phase, when the stream has phases
    replayed: Optional[int] = None  # replay only: samples of this batch from the buffer
    samples_replayed: Optional[int] = None
    replay_loss_mean: Optional[float] = None
    selected_labels: Optional[list[int]] = None  # a classifier's label mix of the selected samples
    target_tokens: Optional[int] = None  # a causal LM's trained tokens
    noise_scale: Optional[float] = None  # adaptive policy: the gradient noise scale estimate, when finite
    memory_per_sample_mb: Optional[float] = None
    noise_small_sq: Optional[float] = None
    noise_big_sq: Optional[float] = None
    penalty: Optional[float] = None  # EWC penalty
    extra: dict[str, Any] = field(default_factory=dict)  # the prequential figures


@dataclass(frozen=True)
class SkippedUpdateRecord(Record):
    """An update not applied: its loss or gradient norm was not finite."""

    kind: ClassVar[str] = "skipped_update"
    batch_size: int
    loss: float
    grad_norm: float


@dataclass(frozen=True)
class OutOfMemoryRecord(Record):
    """An out-of-memory error: the same samples are retrained in smaller micro-batches."""

    kind: ClassVar[str] = "oom"
    micro_batch: int  # the largest micro-batch that failed
    ceiling: int  # the most samples per micro-batch from now on
    batch_size: int


@dataclass(frozen=True)
class EvalRecord(Record):
    """An evaluation: the dev set's metrics as dev_<name> (in `extra`), the domain sets' by name."""

    kind: ClassVar[str] = "eval"
    samples_trained: int
    eval_s: float
    sets: Optional[dict[str, dict[str, Any]]] = None  # eval.sets: each domain's metrics
    extra: dict[str, Any] = field(default_factory=dict)  # dev_accuracy, dev_loss, ... (what the task measures)


@dataclass(frozen=True)
class CheckpointRecord(Record):
    """A checkpoint written (path None: the run has no directory)."""

    kind: ClassVar[str] = "checkpoint"
    path: Optional[str]
    cursor: Optional[dict[str, Any]]  # the stream position it resumes from (None before the first window)
    checkpoint_s: Optional[float] = None
    checkpoint_mb: Optional[float] = None
    state_mb: Optional[float] = None


@dataclass(frozen=True)
class DriftRecord(Record):
    """A drift the detector signalled on the prequential loss."""

    kind: ClassVar[str] = "drift"
    sample: int  # the sample count at which it fired
    sample_id: str
    detector: str
    reactions: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # the prequential figures at the time


@dataclass(frozen=True)
class PhaseRecord(Record):
    """A stream phase started (stream.phases)."""

    kind: ClassVar[str] = "phase"
    phase: str
    index: int
    samples_received: int


@dataclass(frozen=True)
class EwcRefreshRecord(Record):
    """EWC re-estimated the Fisher diagonal and moved its anchor."""

    kind: ClassVar[str] = "ewc_refresh"
    reason: str  # interval, phase_end or drift
    samples: int  # buffer samples of the estimate
    refreshes: int
    seconds: float


@dataclass(frozen=True)
class ResumeRecord(Record):
    """The driver resumed the run from a checkpoint (or from the start: restored_from None)."""

    kind: ClassVar[str] = "resume"
    restored_from: Optional[str]


@dataclass(frozen=True)
class RunSummary:
    """What a run ends with: summary.json (`to_json()`), what `run`/`resume` return and what `ol-ray run` prints.

    The four group mappings are flattened into summary.json beside the fields: the quarantine sink's counts, the
    weight store's, the final evaluation's figures as dev_<name> (what the task measures) and the continual
    learning summary. `summary["key"]` and `summary.get("key")` read the summary.json view.
    """

    run_dir: str
    samples_read: int
    samples_trained: int
    samples_not_selected: int
    samples_nonfinite: int
    samples_trained_twice: int
    accounting_ok: bool  # read = quarantined + not selected + trained + nonfinite, in the ledger and the stream
    ledger: dict[str, int]
    updates: int
    nonfinite_updates: int
    oom_retries: int
    labels_received: list[int]
    labels_trained: list[int]
    memory_ceiling: Optional[int]
    windows: int
    learner_restarts: int
    restored_from: Optional[str]
    wall_s: float
    trained_samples_per_s: float
    staleness_mean: float
    staleness_max: int
    staleness_bound: int
    score_version_max: int
    text_truncated: int
    tokens_truncated: int
    learner_utilisation: float
    first_update_s: Optional[float]
    eval_rows_rejected: int
    cursor: Optional[dict[str, Any]]
    prequential_source: str
    scored: bool
    files_rejected: list[Any]
    learner_device: str
    learner_node: str
    model_parameters: int
    samples_holdout: int
    checkpoint: Optional[str]
    scorer_nodes: list[str]
    scorers: int
    config: dict[str, Any]
    learner_ranks: int = 1  # the data-parallel learner's ranks (learner.num_workers)
    quarantine: dict[str, Any] = field(default_factory=dict)  # samples_quarantined and its reasons
    weights: dict[str, Any] = field(default_factory=dict)  # weight_publishes, weight_pulls, samples_scored, ...
    evaluation: dict[str, Any] = field(default_factory=dict)  # dev_accuracy, dev_loss, ... (None before any)
    continual: dict[str, Any] = field(default_factory=dict)  # phases, accuracy history, prequential figures, ...

    def to_json(self) -> dict[str, Any]:
        groups = ("quarantine", "weights", "evaluation", "continual")
        line = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in groups}
        config = line.pop("config")
        for group in groups:
            line.update(getattr(self, group))
        line["config"] = config  # last: the long part
        return line

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)
