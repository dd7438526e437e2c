"""Stream sources: turn an unbounded stream of rows into bounded windows with a resumable cursor.

A source frames the stream into raw records (`sample_id`, `raw` bytes) and knows its position (`cursor()`), so a
checkpoint can resume after the last window the learner finished. Parsing, decoding and checking happen later, in the
validation stage, so that a bad row becomes a quarantine record instead of a crash here.

Sources yield `None` when nothing is available right now (a followed folder with no new file), so that `windows()`
can close a partial window on time. `windows()` adds the sample budget, the replay rate and the window size.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, NamedTuple, Optional, Protocol

from ol_ray.data.config import StreamConfig

EXTENSIONS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet",
              ".txt": "text"}


class SourceError(RuntimeError):
    """A stream that cannot be read at all (missing file, unreadable header); bad rows are quarantined instead."""


@dataclass(frozen=True)
class RecordFormat:
    """How validation parses a record's raw bytes."""

    kind: Literal["tsv", "csv", "json", "text"]  # text: the raw bytes are the text field's value
    columns: tuple[str, ...] = ()  # header of a delimited file, in order; a text record's one field
    phase: str = ""  # the stream phase (stream.phases) it belongs to: a window never spans two phases


class Record(NamedTuple):
    sample_id: str  # stable across runs: "<file name>:<data row number>" unless the data carries ids
    raw: bytes  # the row as read, undecoded
    record_format: RecordFormat
    origin: str = ""  # where it came from, as a JSON object (Kafka: topic, partition, offset); kept in quarantine


@dataclass
class Window:
    """A bounded slice of the stream: the unit of cursor, ledger and checkpoint (admitted to scoring in chunks)."""

    index: int  # 0, 1, 2, ... in stream order
    records: list[dict[str, Any]]  # {"sample_id": str, "raw": bytes, "origin": str}
    record_format: RecordFormat
    cursor: dict[str, Any] = field(default_factory=dict)  # source position after this window's last record

    def __len__(self) -> int:
        return len(self.records)


class Source(Protocol):
    def records(self) -> Iterator[Optional[Record]]:
        """Records in stream order; None when nothing is available right now."""

    def cursor(self) -> dict[str, Any]:
        """The position after the last record yielded, from which a new source resumes."""


def detect_format(path: str, configured: str) -> str:
    """The configured format, or the one the file extension names; a .json file holding JSON lines (not one
    array) is jsonl."""
    if configured != "auto":
        return configured
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise SourceError(f"cannot tell the format of {path} from its extension; set stream.format "
                          f"(one of {', '.join(sorted(set(EXTENSIONS.values())))})")
    if EXTENSIONS[ext] == "json" and _first_byte(path) != b"[":
        return "jsonl"
    return EXTENSIONS[ext]


def _first_byte(path: str) -> bytes:
    """The file's first byte that is not whitespace (b"" for an empty file)."""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(4096).removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is no content
            if not chunk or chunk.strip():
                return chunk.strip()[:1]


def paced(records: Iterator[Optional[Record]], rate: float, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[Optional[Record]]:
    """Release records no faster than `rate` per second (0 = unpaced), as if they arrived live."""
    if rate <= 0:
        yield from records
        return
    start = clock()
    released = 0
    for record in records:
        if record is not None:
            due = start + released / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            released += 1
        yield record


def windows(source: Source, cfg: StreamConfig, first_index: int = 0, already_read: int = 0,
            stop: Optional[threading.Event] = None, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Iterator[Window]:
    """Group a source's records into windows of `window_size`, closing early after `max_window_wait_s`, when the
    record format changes (a new file with other columns), and at the sample budget `max_samples` (of which a
    resumed stream has `already_read`). Setting `stop` ends the stream at the next record or idle poll."""
    index = first_index
    batch: list[dict[str, Any]] = []
    batch_format: Optional[RecordFormat] = None
    batch_cursor: dict[str, Any] = source.cursor()
    opened_at = 0.0
    read = already_read
    if cfg.max_samples and read >= cfg.max_samples:
        return

    def close() -> Window:
        nonlocal index, batch, batch_format
        window = Window(index, batch, batch_format, batch_cursor)
        index += 1
        batch, batch_format = [], None
        return window

    for record in paced(source.records(), cfg.rate, clock, sleep):
        if stop is not None and stop.is_set():
            return
        if record is not None:
            if batch and record.record_format != batch_format:
                yield close()
            if not batch:
                opened_at = clock()
                batch_format = record.record_format
            batch.append({"sample_id": record.sample_id, "raw": record.raw, "origin": record.origin})
            batch_cursor = source.cursor()
            read += 1
        else:  # nothing pending at the source: its cursor now also covers files it finished or rejected
            batch_cursor = source.cursor()
        budget_spent = bool(cfg.max_samples) and read >= cfg.max_samples
        if batch and (len(batch) >= cfg.window_size or budget_spent or clock() - opened_at >= cfg.max_window_wait_s):
            yield close()
        if budget_spent:
            return
    if batch:
        batch_cursor = source.cursor()  # the stream ended after this window's last record
        yield close()
