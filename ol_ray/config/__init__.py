"""Configuration as data: nested frozen dataclasses loaded from YAML, then dotted overrides.

    cfg = load_config("configs/sst2.yaml", ["learner.lr=3e-5", "stream.max_samples=2000"])

Each part owns its section (`ol_ray/<part>/config.py`, a comment per field); `Config` composes them, `load_config`
builds and checks one. The reference, docs/configuration.md, is generated from those comments
(`python -m ol_ray.config.reference`).
"""

from ol_ray.batching.config import BatchingConfig
from ol_ray.config.load import apply_override, from_dict, load_config, load_run_config, to_dict
from ol_ray.config.schema import Config
from ol_ray.continual.config import ContinualConfig
from ol_ray.data.config import DomainConfig, StreamConfig
from ol_ray.driver.config import RayConfig
from ol_ray.errors import ConfigError
from ol_ray.learner.config import LearnerConfig
from ol_ray.models.config import ModelConfig
from ol_ray.observe.config import EvalConfig, OutputConfig
from ol_ray.scoring.config import ScoringConfig
from ol_ray.selection.config import SelectionConfig
from ol_ray.serve.config import ServeConfig
from ol_ray.state.config import CheckpointConfig

__all__ = ["BatchingConfig", "CheckpointConfig", "Config", "ConfigError", "ContinualConfig", "DomainConfig",
           "EvalConfig", "LearnerConfig", "ModelConfig", "OutputConfig", "RayConfig", "ScoringConfig",
           "SelectionConfig", "ServeConfig", "StreamConfig", "apply_override", "from_dict", "load_config",
           "load_run_config", "to_dict"]
