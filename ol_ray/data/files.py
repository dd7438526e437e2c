"""File sources: one data file (TSV, CSV, JSON lines, JSON array, Parquet, text), a followed folder of them, and rows
held in memory. Each frames rows into raw records and resumes from its cursor."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ol_ray.data.config import StreamConfig
from ol_ray.data.source import EXTENSIONS, Record, RecordFormat, SourceError, detect_format

logger = logging.getLogger(__name__)


def _strip_newline(line: bytes) -> bytes:
    return line.rstrip(b"\r\n") if line.endswith(b"\n") else line


class FileSource:
    """One TSV, CSV, JSON lines, JSON array, Parquet or text file, in file order (resumes from a byte offset or a
    row number) or in a seeded shuffled order. A text file's records are its paragraphs (runs of lines between
    blank lines), each the value of `text_field`."""

    def __init__(self, path: str, cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None):
        if not os.path.isfile(path):
            raise SourceError(f"stream file {path} does not exist")
        self.path = path
        self.name = os.path.basename(path)
        self.kind = detect_format(path, cfg.format)
        self.shuffle_seed = cfg.shuffle_seed
        self.text_field = cfg.text_field
        cursor = cursor or {}
        if cursor.get("file", path) != path:
            raise SourceError(f"checkpoint cursor is for {cursor['file']}, not {path}")
        if cursor and cursor.get("shuffle_seed") != self.shuffle_seed:
            raise SourceError(f"checkpoint cursor of {path} is for shuffle seed {cursor['shuffle_seed']}, "
                              f"not {self.shuffle_seed}")
        self.row = int(cursor.get("row", 0))  # data rows consumed
        self.offset = int(cursor.get("offset", -1))  # byte offset of the next line, in file order
        self.record_format = self._read_format()

    def _read_format(self) -> RecordFormat:
        if self.kind in ("jsonl", "json", "parquet"):
            return RecordFormat("json")
        if self.kind == "text":
            return RecordFormat("text", (self.text_field,))
        with open(self.path, "rb") as handle:
            header = _strip_newline(handle.readline())
            if self.offset < 0:
                self.offset = handle.tell()
        if not header:
            return RecordFormat(self.kind, ())  # an empty file: no header, no rows
        try:
            text = header.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"the header line of {self.path} is not valid UTF-8") from None
        import csv

        delimiter = "\t" if self.kind == "tsv" else ","
        columns = tuple(next(csv.reader([text], delimiter=delimiter, quoting=csv.QUOTE_NONE if self.kind == "tsv"
                                        else csv.QUOTE_MINIMAL)))
        if not any(columns):
            raise SourceError(f"{self.path} has no header line naming its columns")
        return RecordFormat(self.kind, columns)

    def cursor(self) -> dict[str, Any]:
        return {"file": self.path, "row": self.row, "offset": self.offset, "shuffle_seed": self.shuffle_seed}

    def records(self) -> Iterator[Optional[Record]]:
        if self.kind in ("tsv", "csv") and not self.record_format.columns:
            return
        if self.kind == "parquet":
            yield from self._parquet_records()
        elif self.kind == "json":
            yield from self._table_records(self._json_array())
        elif self.kind == "text":
            yield from self._paragraph_records()
        elif self.shuffle_seed is None:
            yield from self._sequential_records()
        else:
            yield from self._shuffled_records()

    def _sample_id(self, row_number: int) -> str:
        return f"{self.name}:{row_number}"

    def _sequential_records(self) -> Iterator[Record]:
        with open(self.path, "rb") as handle:
            handle.seek(max(self.offset, 0))
            while True:
                line = handle.readline()
                if not line:
                    return
                self.row += 1
                self.offset = handle.tell()
                yield Record(self._sample_id(self.row), _strip_newline(line), self.record_format)

    def _line_offsets(self) -> np.ndarray:
        offsets = []
        with open(self.path, "rb") as handle:
            if self.record_format.columns:
                handle.readline()
            position = handle.tell()
            for line in handle:
                offsets.append(position)
                position += len(line)
        return np.asarray(offsets, dtype=np.int64)

    def _shuffled_records(self) -> Iterator[Record]:
        offsets = self._line_offsets()
        order = np.random.default_rng(self.shuffle_seed).permutation(len(offsets))
        with open(self.path, "rb") as handle:
            while self.row < len(order):
                line_index = int(order[self.row])
                handle.seek(int(offsets[line_index]))
                line = handle.readline()
                self.row += 1
                yield Record(self._sample_id(line_index + 1), _strip_newline(line), self.record_format)

    def _paragraph_spans(self, position: int) -> list[tuple[int, int]]:
        """(start, end) byte offsets of the file's paragraphs from byte `position` on."""
        spans, start = [], -1
        with open(self.path, "rb") as handle:
            handle.seek(position)
            for line in handle:
                if line.strip() and start < 0:
                    start = position
                elif not line.strip() and start >= 0:
                    spans.append((start, position))
                    start = -1
                position += len(line)
        if start >= 0:
            spans.append((start, position))
        return spans

    def _paragraph_records(self) -> Iterator[Record]:
        if self.shuffle_seed is None:  # file order, resuming after the byte offset of the last paragraph read
            spans = self._paragraph_spans(max(self.offset, 0))
            numbers = list(range(self.row + 1, self.row + 1 + len(spans)))
        else:  # the whole file's paragraphs in a seeded order, resuming after `row` of them
            every = self._paragraph_spans(0)
            order = np.random.default_rng(self.shuffle_seed).permutation(len(every))[self.row:]
            spans, numbers = [every[i] for i in order], [int(i) + 1 for i in order]
        with open(self.path, "rb") as handle:
            for (start, end), number in zip(spans, numbers):
                handle.seek(start)
                raw = handle.read(end - start).rstrip(b"\r\n")
                self.row += 1
                if self.shuffle_seed is None:
                    self.offset = end
                yield Record(self._sample_id(number), raw, self.record_format)

    def _json_array(self) -> list[Any]:
        try:
            with open(self.path, encoding="utf-8-sig") as handle:
                rows = json.load(handle)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SourceError(f"{self.path} is not a JSON array of rows: {error}") from None
        if not isinstance(rows, list):
            raise SourceError(f"{self.path} holds a JSON {type(rows).__name__}, not an array of rows")
        return rows

    def _table_records(self, table: list[Any]) -> Iterator[Record]:
        """Rows held in memory, in file order or the seeded shuffled order, resuming after `row` of them."""
        order = (np.random.default_rng(self.shuffle_seed).permutation(len(table)) if self.shuffle_seed is not None
                 else np.arange(len(table)))
        while self.row < len(order):
            index = int(order[self.row])
            self.row += 1
            yield Record(self._sample_id(index + 1), json_bytes(table[index]), self.record_format)

    def _parquet_records(self) -> Iterator[Record]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path)
        if self.shuffle_seed is not None:
            yield from self._table_records(parquet.read().to_pylist())
            return
        position = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for item in batch.to_pylist():
                position += 1
                if position <= self.row:  # resuming: skip what an earlier run read
                    continue
                self.row = position
                yield Record(self._sample_id(position), json_bytes(item), self.record_format)


def json_bytes(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")


class DirectorySource:
    """A folder followed for new data files: each file is read once, in order of modification time then name.

    Writers should move finished files in (write elsewhere or to a dotfile / *.tmp name, then rename): files whose
    names start with "." or end with .tmp or .part are ignored until renamed. A file that cannot be read (no header,
    header not UTF-8, not a regular file, deleted before it was opened) is rejected with a reason, logged, kept in the
    cursor's `rejected` list, and the folder is followed on. Stops after `idle_timeout_s` without a new file
    (0 = follows forever).
    """

    def __init__(self, path: str, cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if not os.path.isdir(path):
            raise SourceError(f"stream folder {path} does not exist")
        self.path = path
        self.cfg = cfg
        self.clock = clock
        self.sleep = sleep
        cursor = cursor or {}
        self.done: list[str] = list(cursor.get("done", []))
        self.rejected: list[dict[str, str]] = list(cursor.get("rejected", []))
        self.current: Optional[FileSource] = None
        if cursor.get("current"):  # resuming inside a file, which may have been removed meanwhile
            self.current = self._open(cursor["current"], cursor.get("file_cursor"))
            if self.current is None:
                self.done.append(cursor["current"])

    def cursor(self) -> dict[str, Any]:
        return {
            "folder": self.path,
            "done": list(self.done),
            "rejected": list(self.rejected),
            "current": self.current.name if self.current else None,
            "file_cursor": self.current.cursor() if self.current else None,
        }

    def _new_files(self) -> list[str]:
        seen = set(self.done) | {item["file"] for item in self.rejected}
        names = []
        for entry in os.scandir(self.path):
            name = entry.name
            if name.startswith(".") or name.endswith((".tmp", ".part")) or name in seen:
                continue
            extension = os.path.splitext(name)[1].lower()
            if self.cfg.format == "auto" and (extension not in EXTENSIONS or extension == ".txt"):
                continue  # a .txt file dropped into a followed folder is more likely a note than data
            try:
                names.append((entry.stat().st_mtime, name))
            except FileNotFoundError:  # removed since the listing; nothing of it was read
                continue
        return [name for _, name in sorted(names)]

    def _open(self, name: str, cursor: Optional[dict[str, Any]] = None) -> Optional[FileSource]:
        path = os.path.join(self.path, name)
        try:
            if not os.path.isfile(path):
                raise SourceError("not a regular file" if os.path.exists(path) else "deleted before it was read")
            return FileSource(path, self.cfg, cursor)
        except (SourceError, OSError) as error:
            reason = str(error).replace(path, name)
            self.rejected.append({"file": name, "reason": reason})
            logger.warning("ol_ray: skipping %s in %s: %s", name, self.path, reason)
            return None

    def records(self) -> Iterator[Optional[Record]]:
        idle_since = self.clock()
        while True:
            if self.current is not None:
                for record in self.current.records():
                    yield record
                self.done.append(self.current.name)
                self.current = None
                idle_since = self.clock()
            pending = self._new_files()
            if pending:
                self.current = self._open(pending[0])
                continue
            if self.cfg.idle_timeout_s and self.clock() - idle_since >= self.cfg.idle_timeout_s:
                return
            yield None
            self.sleep(self.cfg.poll_interval_s)


class MemorySource:
    """Rows held in memory (dicts with the configured text and label fields), for tests and notebooks."""

    def __init__(self, rows: Sequence[dict[str, Any]], cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None,
                 name: str = "memory"):
        self.rows = rows
        self.name = name
        self.row = int((cursor or {}).get("row", 0))

    def cursor(self) -> dict[str, Any]:
        return {"source": self.name, "row": self.row}

    def records(self) -> Iterator[Optional[Record]]:
        record_format = RecordFormat("json")
        while self.row < len(self.rows):
            row = self.rows[self.row]
            self.row += 1
            yield Record(f"{self.name}:{self.row}", json_bytes(row), record_format)
