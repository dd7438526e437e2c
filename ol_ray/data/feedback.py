"""Feedback: labelled items appended to a durable log while a model serves, and the source that streams them.

`FeedbackLog.append(items)` checks every item with the stream's own validation (the same parse the pipeline applies,
so an acknowledged item cannot be quarantined later for its shape), gives each an id, and returns the ids only once
the lines are written and fsynced: an acknowledged item survives a crash of the writer or the machine. A bad item
refuses the whole call with `FeedbackError`, naming the item and the field, and nothing of it is written.

`FeedbackSource` (`stream.source: feedback`, `stream.path` the log) follows the log as a pipeline's stream: it reads
complete lines from its byte offset (the checkpoint cursor), waits for more when it reaches the end, and stops after
`stream.idle_timeout_s` without a new line (0: never). Several writers may append to one log (replicas of a server):
each append is one write of whole lines under an exclusive lock.

`KafkaFeedback` is the same contract for a run that reads Kafka (`stream.source: kafka`): each item is one message
on the feedback topic, acknowledged once the broker confirms it (`acks=all`, an idempotent producer), and the id it
returns is the one the run's Kafka source gives that message, so the ledger names it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from ol_ray.config.schema import Config
from ol_ray.data.config import StreamConfig
from ol_ray.data.source import Record, RecordFormat, SourceError
from ol_ray.data.validation import FieldSpec, RowError, parse_record

JSONL = RecordFormat("json")
ID_PREFIX = "feedback:"
DELIVERY_TIMEOUT_S = 10.0  # Kafka feedback: how long an append waits for the broker's confirmation


class FeedbackUnavailable(RuntimeError):
    """Items that were good but could not be made durable (the broker did not confirm them): not acknowledged."""


class FeedbackError(ValueError):
    """An item that cannot be taken: `index` is its position in the call, `field` the field at fault."""

    def __init__(self, index: int, field: str, reason: str):
        super().__init__(f"item {index}: {reason}")
        self.index, self.field, self.reason = index, field, reason


def checked_items(items: Sequence[Any], spec: FieldSpec, max_items: int = 0) -> tuple[list[str], list[bytes]]:
    """Each item's new id and its JSON line (`{"id", <the stream's fields>, "received"}`), checked by the stream's
    own validation; FeedbackError on the first bad item."""
    if not isinstance(items, (list, tuple)) or not items:
        raise FeedbackError(0, "items", "send one item or a non-empty list of items")
    if max_items and len(items) > max_items:
        raise FeedbackError(max_items, "items", f"{len(items)} items is over the limit of {max_items}")
    ids, lines = [], []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise FeedbackError(index, "item", "an item is a JSON object of the stream's fields")
        item = {key: value for key, value in item.items() if key not in ("id", "received")}
        ids.append(ID_PREFIX + uuid.uuid4().hex)
        line = json.dumps({"id": ids[-1], **item, "received": time.time()}, ensure_ascii=False).encode("utf-8")
        try:
            if spec.max_record_bytes and len(line) > spec.max_record_bytes:
                raise RowError("oversize", f"the item is over stream.max_record_bytes ({spec.max_record_bytes})")
            ids[-1] = parse_record(ids[-1], line, JSONL, spec).sample_id  # the stream's id field, when it has one
        except RowError as error:  # no field: a fault of the whole item
            raise FeedbackError(index, error.field or "item", str(error)) from None
        lines.append(line)
    return ids, lines


class FeedbackLog:
    """An append-only JSON-lines file of feedback items, each `{"id", <the stream's fields>, "received"}`."""

    def __init__(self, path: str, spec: FieldSpec, max_items: int = 0):
        self.path, self.spec, self.max_items = path, spec, max_items
        self.lock = threading.Lock()  # threads of one process; flock orders processes
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def append(self, items: Sequence[Any]) -> list[str]:
        """Check, write and fsync the items; their ids, once they are durable."""
        ids, lines = checked_items(items, self.spec, self.max_items)
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


class KafkaFeedback:
    """Feedback as messages on a Kafka topic: one per item, keyed by its id; `append` returns the ids once the
    broker has confirmed every message (FeedbackUnavailable otherwise: nothing is acknowledged). An id is what the
    run's Kafka source calls the message: the key with `stream.kafka_key_as_id`, else topic:partition:offset."""

    def __init__(self, cfg: StreamConfig, spec: FieldSpec, topic: str, max_items: int = 0,
                 timeout_s: float = DELIVERY_TIMEOUT_S):
        from ol_ray.data.kafka import confluent

        self.kafka = confluent()
        self.servers, self.spec, self.topic, self.max_items, self.timeout_s = (cfg.kafka_servers, spec, topic,
                                                                                  max_items, timeout_s)
        self.key_as_id = cfg.kafka_key_as_id
        self.producer = self.kafka.Producer({"bootstrap.servers": cfg.kafka_servers, "linger.ms": 5,
                                             **cfg.kafka_options,  # e.g. SASL; never the guarantees below
                                             "acks": "all", "enable.idempotence": True,
                                             "message.timeout.ms": int(timeout_s * 1000)})

    def append(self, items: Sequence[Any]) -> list[str]:
        """Check the items, produce them and wait for the broker; the ids the run will know them by."""
        ids, lines = checked_items(items, self.spec, self.max_items)
        outcomes: list[Any] = [None] * len(lines)

        def delivered(index: int) -> Callable[[Any, Any], None]:
            return lambda error, message: outcomes.__setitem__(index, error if error is not None else message)

        for index, (sample_id, line) in enumerate(zip(ids, lines)):
            while True:
                try:
                    self.producer.produce(self.topic, value=line, key=sample_id.encode("utf-8"),
                                          on_delivery=delivered(index))
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.1)
        self.producer.flush(self.timeout_s)
        failed = [outcome for outcome in outcomes if outcome is None or isinstance(outcome, self.kafka.KafkaError)]
        if failed:
            raise FeedbackUnavailable(f"{len(failed)} of {len(lines)} items were not confirmed by Kafka at "
                                      f"{self.servers} (topic {self.topic!r}): {failed[0] or 'timed out'}")
        if self.key_as_id or self.spec.id_field:  # the run names the message by its key, or by its id field
            return ids
        return [f"{m.topic()}:{m.partition()}:{m.offset()}" for m in outcomes]


def feedback_sink(cfg: Config, path: str, max_items: int = 0, topic: str = "") -> Any:
    """Where feedback for a run goes: its Kafka topic when the run reads Kafka (`topic`, else the first of
    stream.kafka_topics), else the log at `path`. Both take `append(items) -> ids`."""
    spec = FieldSpec.from_config(cfg)
    if cfg.stream.source == "kafka":
        return KafkaFeedback(cfg.stream, spec, topic or cfg.stream.kafka_topics[0], max_items)
    return FeedbackLog(path, spec, max_items)


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
