"""The whole configuration: one section per part, each defined next to the code it configures."""

from __future__ import annotations

from dataclasses import dataclass, field

from ol_ray.batching.config import BatchingConfig
from ol_ray.continual.config import ContinualConfig
from ol_ray.data.config import StreamConfig
from ol_ray.driver.config import RayConfig
from ol_ray.learner.config import LearnerConfig
from ol_ray.models.config import ModelConfig
from ol_ray.observe.config import EvalConfig, OutputConfig
from ol_ray.scoring.config import ScoringConfig
from ol_ray.selection.config import SelectionConfig
from ol_ray.serve.config import ServeConfig
from ol_ray.state.config import CheckpointConfig


@dataclass(frozen=True)
class Config:
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
