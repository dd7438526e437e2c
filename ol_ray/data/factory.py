"""The source a config names: one place that knows every kind of source."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from ol_ray.data.config import StreamConfig
from ol_ray.data.feedback import FeedbackSource
from ol_ray.data.files import DirectorySource, FileSource, MemorySource
from ol_ray.data.hub import HubSource
from ol_ray.data.kafka import KafkaSource
from ol_ray.data.phases import PhasedSource
from ol_ray.data.source import Source, SourceError


def make_source(cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None,
                rows: Optional[Sequence[dict[str, Any]]] = None) -> Source:
    """The source the config names; a missing file or folder falls back to `hub_dataset` only with `hub_fallback`."""
    if cfg.phases:
        return PhasedSource(cfg, cursor)
    if cfg.source == "memory":
        if rows is None:
            raise SourceError("stream.source=memory needs rows passed in code (run_pipeline(cfg, rows=...))")
        return MemorySource(rows, cfg, cursor)
    if cfg.source == "kafka":
        return KafkaSource(cfg, cursor)
    if cfg.source == "hub" or (cfg.hub_fallback and cfg.hub_dataset and not os.path.exists(cfg.path)):
        return HubSource(cfg, cfg.hub_split, cursor)
    if cfg.source == "feedback":
        return FeedbackSource(cfg.path, cfg, cursor)
    if cfg.source == "directory":
        return DirectorySource(cfg.path, cfg, cursor)
    return FileSource(cfg.path, cfg, cursor)
