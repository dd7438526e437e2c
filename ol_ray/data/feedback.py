"""Feedback: labelled items appended to a durable log while a model serves, and the source that streams them.

`FeedbackLog.append(items)` checks every item with the stream's own validation (the same parse the pipeline applies,
so an acknowledged item cannot be quarantined later for its shape), gives each an id, and returns the ids only once
the lines are written and fsynced: an acknowledged item survives a crash of the writer or the machine. A bad item
refuses the whole call with `FeedbackError`, naming the item and the field, and nothing of it is written.

`FeedbackSource` (`stream.source: feedback`, `stream.path` the log) follows the log as a pipeline's stream: it reads
complete lines from its byte offset (the checkpoint cursor), waits for more when it reaches the end, and stops after
`stream.idle_timeout_s` without a new line (0: never). Several writers may append to one log (replicas of a server):
each append is one write of whole lines under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from ol_ray.data.config import StreamConfig
from ol_ray.data.source import Record, RecordFormat, SourceError
from ol_ray.data.validation import FieldSpec, RowError, parse_record

JSONL = RecordFormat("json")
ID_PREFIX = "feedback:"


class FeedbackError(ValueError):
    """An item that cannot be taken: `index` is its position in the call, `field` the field at fault."""

    def __init__(self, index: int, field: str, reason: str):
        super().__init__(f"item {index}: {reason}")
        self.index, self.field, self.reason = index, field, reason


FIELD_OF_CODE = {"missing_text": "text", "empty_text": "text", "bad_text": "text", "nul_bytes": "text",
                 "missing_label": "label", "bad_label": "label", "label_out_of_range": "label",
                 "bad_messages": "messages", "oversize": "item"}


class FeedbackLog:
    """An append-only JSON-lines file of feedback items, each `{"id", <the stream's fields>, "received"}`."""

    def __init__(self, path: str, spec: FieldSpec, max_items: int = 0):
        self.path, self.spec, self.max_items = path, spec, max_items
        self.lock = threading.Lock()  # threads of one process; flock orders processes
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def check(self, items: Sequence[Any]) -> tuple[list[str], list[bytes]]:
        """Each item's id and the line the log will hold; FeedbackError on the first bad one."""
        if not isinstance(items, (list, tuple)) or not items:
            raise FeedbackError(0, "items", "send one item or a non-empty list of items")
        if self.max_items and len(items) > self.max_items:
            raise FeedbackError(self.max_items, "items",
                                f"{len(items)} items is over the limit of {self.max_items}")
        ids, lines = [], []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise FeedbackError(index, "item", "an item is a JSON object of the stream's fields")
            item = {key: value for key, value in item.items() if key not in ("id", "received")}
            ids.append(ID_PREFIX + uuid.uuid4().hex)
            line = json.dumps({"id": ids[-1], **item, "received": time.time()}, ensure_ascii=False).encode("utf-8")
            try:
                if self.spec.max_record_bytes and len(line) > self.spec.max_record_bytes:
                    raise RowError("oversize", f"the item is over stream.max_record_bytes "
                                               f"({self.spec.max_record_bytes})")
                parse_record("", line, JSONL, self.spec)
            except RowError as error:
                raise FeedbackError(index, FIELD_OF_CODE.get(error.code, error.code), str(error)) from None
            lines.append(line)
        return ids, lines

    def append(self, items: Sequence[Any]) -> list[str]:
        """Check, write and fsync the items; their ids, once they are durable."""
        ids, lines = self.check(items)
        data = b"".join(line + b"\n" for line in lines)
        with self.lock, open(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return ids


class FeedbackSource:
    """The log as a stream: complete lines from a byte offset, followed until idle."""

    def __init__(self, path: str, cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        cursor = cursor or {}
        if cursor.get("file", path) != path:
            raise SourceError(f"checkpoint cursor is for {cursor['file']}, not {path}")
        self.path, self.cfg, self.clock, self.sleep = path, cfg, clock, sleep
        self.offset = int(cursor.get("offset", 0))  # byte offset of the next line to read
        self.row = int(cursor.get("row", 0))  # lines read

    def cursor(self) -> dict[str, Any]:
        return {"file": self.path, "offset": self.offset, "row": self.row}

    def records(self) -> Iterator[Optional[Record]]:
        idle_since = self.clock()
        while True:
            found = False
            if os.path.exists(self.path):
                with open(self.path, "rb") as handle:
                    handle.seek(self.offset)
                    for line in handle:
                        if not line.endswith(b"\n"):  # a line still being written: read it whole next time
                            break
                        self.offset += len(line)
                        self.row += 1
                        found = True
                        yield Record(self._sample_id(line), line.rstrip(b"\r\n"), JSONL)
            if found:
                idle_since = self.clock()
                continue
            if self.cfg.idle_timeout_s and self.clock() - idle_since >= self.cfg.idle_timeout_s:
                return
            yield None  # nothing new now: a partial window may close on time
            self.sleep(self.cfg.poll_interval_s)

    def _sample_id(self, line: bytes) -> str:
        """The id the log gave the item; a line that is not ours is named by its row and quarantined later."""
        try:
            value = json.loads(line).get("id")
        except (ValueError, AttributeError):
            value = None
        return str(value) if value else f"{os.path.basename(self.path)}:{self.row}"
