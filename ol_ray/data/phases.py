"""A stream in phases: one data file after another, as when the domain a deployed model sees shifts (movie reviews,
then airline tweets). Each phase is a `DomainConfig` (its file, fields and sample budget); its records carry the
phase's name in their format, so windows close at a phase boundary, and their sample ids are prefixed with it
("sst2/train.tsv:17"), so two files of the same name never clash.

The cursor says which phase the stream is in, how much of it was read, and the phase file's own cursor, so a
resumed run continues inside the phase it stopped in.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Optional

from ol_ray.config.schema import Config
from ol_ray.data.config import DomainConfig, StreamConfig
from ol_ray.data.files import FileSource
from ol_ray.data.source import Record, SourceError

OVERRIDDEN = ("format", "text_field", "label_field", "label_names", "id_field")  # what a domain may set


def domain_stream(stream: StreamConfig, domain: DomainConfig) -> StreamConfig:
    """The stream settings for one domain's file: the stream's, with the domain's non-empty fields instead."""
    changes = {key: getattr(domain, key) for key in OVERRIDDEN if getattr(domain, key)}
    return dataclasses.replace(stream, path=domain.path, phases=(), **changes)


def config_for_phase(cfg: Config, phase: str) -> Config:
    """The config that validates a window of `phase` (its fields and label names); `cfg` itself outside phases."""
    for domain in cfg.stream.phases:
        if domain.name == phase:
            return dataclasses.replace(cfg, stream=domain_stream(cfg.stream, domain))
    return cfg


class PhasedSource:
    """The files of `stream.phases`, in order, each up to its `max_samples`."""

    def __init__(self, cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None):
        self.cfg = cfg
        self.phases = cfg.phases
        for domain in self.phases:
            if not os.path.isfile(domain.path):
                raise SourceError(f"stream phase {domain.name!r}: file {domain.path} does not exist")
        cursor = cursor or {}
        self.index = int(cursor.get("phase", 0))
        self.read_in_phase = int(cursor.get("phase_read", 0))
        self.current = self._open(cursor.get("phase_cursor")) if self.index < len(self.phases) else None

    def _open(self, cursor: Optional[dict[str, Any]] = None) -> FileSource:
        domain = self.phases[self.index]
        return FileSource(domain.path, domain_stream(self.cfg, domain), cursor)

    def cursor(self) -> dict[str, Any]:
        name = self.phases[self.index].name if self.index < len(self.phases) else None
        return {"phase": self.index, "phase_name": name, "phase_read": self.read_in_phase,
                "phase_cursor": self.current.cursor() if self.current else None}

    def records(self) -> Iterator[Optional[Record]]:
        while self.current is not None:
            domain = self.phases[self.index]
            record_format = dataclasses.replace(self.current.record_format, phase=domain.name)
            if not domain.max_samples or self.read_in_phase < domain.max_samples:
                for record in self.current.records():
                    self.read_in_phase += 1
                    yield record._replace(sample_id=f"{domain.name}/{record.sample_id}", record_format=record_format)
                    if domain.max_samples and self.read_in_phase >= domain.max_samples:
                        break
            self.index += 1
            self.read_in_phase = 0
            self.current = self._open() if self.index < len(self.phases) else None

