"""Chunks: the unit of admission and scoring, and the typed records that travel with them.

A window (the unit of cursor, ledger and checkpoint) is admitted to scoring in chunks of at most
`scoring.batch_size` rows, as admission control allows. A scorer turns a `Chunk` of raw records into a block of
candidate columns (validated, tokenized and, when the strategy reads scores, scored) plus a `ChunkResult`: the
small record the driver reads to account for the chunk, while the block itself goes from the scorer to the learner
by reference. `prepare_chunk` is the plain part (validation and tokenization), callable without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import ray

from ol_ray.config.schema import Config
from ol_ray.data.source import RecordFormat


@dataclass(frozen=True)
class Chunk:
    sequence: int  # admission order within the run, from 0
    window: int  # the window it belongs to
    records: tuple[dict[str, Any], ...]  # {"sample_id", "raw", "origin"}, as the source framed them
    record_format: RecordFormat

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class ChunkResult:
    sequence: int
    window: int
    rows: int  # records in the chunk
    kept: int  # candidates in its block (the rest are quarantined)
    quarantined: int  # rejected by validation or tokenization (the quarantine sink holds them)
    weight_version: int  # the version that scored it; -1 unscored
    seconds: float  # time the scorer spent on it


def raw_columns(chunk: Chunk) -> dict[str, np.ndarray]:
    """The chunk's records as the columns validation takes."""
    def column(key: str) -> np.ndarray:
        values = np.empty(len(chunk.records), dtype=object)
        values[:] = [record.get(key, "") for record in chunk.records]
        return values

    return {"sample_id": column("sample_id"), "raw": column("raw"), "origin": column("origin")}


def prepare_chunk(chunk: Chunk, cfg: Config, quarantine: Optional[Any], specs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Validate and tokenize a chunk: the candidate columns of its good rows (bad ones go to `quarantine`, the
    sink actor). `specs` caches a FieldSpec per stream phase."""
    from ol_ray.data.phases import config_for_phase
    from ol_ray.data.validation import FieldSpec, validate_batch
    from ol_ray.tasks.tokenize import tokenize_batch

    phase = chunk.record_format.phase
    if phase not in specs:
        specs[phase] = FieldSpec.from_config(config_for_phase(cfg, phase))
    columns = validate_batch(raw_columns(chunk), chunk.record_format, specs[phase], chunk.window, quarantine)
    if not len(columns["sample_id"]):
        return columns
    write = (lambda records: ray.get(quarantine.write.remote(records))) if quarantine is not None else None
    return tokenize_batch(columns, cfg.model, cfg.stream.chat_template, write)
