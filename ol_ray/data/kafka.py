"""Kafka: an unbounded stream source whose cursor is the next offset of every partition, and a producer that replays a
data file into a topic.

The source assigns itself every partition of the configured topics (no consumer-group rebalancing: one reader, the
pipeline's driver) at the offsets of its cursor, and reads each partition until it is caught up (librdkafka's
end-of-partition event), never to an offset computed in advance: real Kafka leaves gaps (compaction, transaction
markers) and a partition's high watermark need not count its records. Every message read is yielded once as a
record, in partition order, with its topic, partition and offset as its origin and (by default) as its sample id:
a topic keyed by entity (a user id, a product id) repeats keys, so a key is the id only where the config says the
producer keeps keys unique (`stream.kafka_key_as_id`). The cursor after a record is where a resumed source
continues, so a checkpoint's cursor resumes exactly after the last window the learner finished. With
`stream.kafka_group_id`, GroupCommitter commits each checkpoint's offsets to that consumer group, so Kafka tooling
shows what the learner has trained and checkpointed, never merely what was read.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable, Iterator, Optional

from ol_ray.data.config import StreamConfig
from ol_ray.data.files import FileSource
from ol_ray.data.source import Record, RecordFormat, SourceError, paced
from ol_ray.data.validation import RowError, decode_fields

logger = logging.getLogger(__name__)
JSON = RecordFormat("json")
METADATA_TIMEOUT_S = 10.0


def partition_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def confluent():
    try:
        import confluent_kafka
    except ImportError:
        raise SourceError("reading Kafka needs confluent-kafka: pip install 'ol_ray[kafka]'") from None
    return confluent_kafka


class KafkaSource:
    """Every partition of `stream.kafka_topics`, from the cursor's offsets (else `stream.kafka_start`).

    Without `stream.kafka_follow` the stream ends once every partition is caught up; with it, the source keeps
    polling and ends after `stream.idle_timeout_s` without a message (0 = never)."""

    def __init__(self, cfg: StreamConfig, cursor: Optional[dict[str, Any]] = None,
                 clock: Callable[[], float] = time.monotonic):
        kafka = confluent()
        self.cfg = cfg
        self.clock = clock
        cursor = cursor or {}
        if cursor and cursor.get("topics") != list(cfg.kafka_topics):
            raise SourceError(f"checkpoint cursor is for Kafka topics {cursor.get('topics')}, not "
                              f"{list(cfg.kafka_topics)}")
        self.offsets: dict[str, int] = {key: int(value) for key, value in cursor.get("offsets", {}).items()}
        settings = {"bootstrap.servers": cfg.kafka_servers, "group.id": cfg.kafka_group_id or f"ol_ray-{uuid.uuid4()}",
                    "enable.auto.commit": False, "enable.partition.eof": True,
                    "auto.offset.reset": cfg.kafka_start, **cfg.kafka_options}
        try:
            self.consumer = kafka.Consumer(settings)
        except kafka.KafkaException as error:
            raise SourceError(f"cannot create a Kafka consumer for {cfg.kafka_servers}: {error}") from None
        self.partitions = self._partitions(kafka)
        start = kafka.OFFSET_BEGINNING if cfg.kafka_start == "earliest" else kafka.OFFSET_END
        self.consumer.assign([kafka.TopicPartition(topic, partition, self.offsets.get(partition_key(topic, partition),
                                                                                       start))
                              for topic, partition in self.partitions])
        self.caught_up: set[str] = set()

    def _partitions(self, kafka) -> list[tuple[str, int]]:
        """Every (topic, partition) of the configured topics; a clear error when the broker or a topic is missing."""
        found = []
        for topic in self.cfg.kafka_topics:
            try:
                metadata = self.consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
            except kafka.KafkaException as error:
                self.close()
                raise SourceError(f"cannot reach Kafka at {self.cfg.kafka_servers}: {error}") from None
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                self.close()
                reason = described.error if described is not None and described.error else "no partitions"
                raise SourceError(f"Kafka topic {topic!r} at {self.cfg.kafka_servers} cannot be read: {reason}")
            found.extend((topic, partition) for partition in sorted(described.partitions))
        return found

    def cursor(self) -> dict[str, Any]:
        return {"source": "kafka", "topics": list(self.cfg.kafka_topics), "offsets": dict(self.offsets)}

    def records(self) -> Iterator[Optional[Record]]:
        kafka = confluent()
        idle_since = self.clock()
        try:
            while True:
                message = self.consumer.poll(self.cfg.poll_interval_s)
                if message is None or message.error() is not None:
                    if message is not None:
                        self._handle_error(kafka, message)
                    if not self.cfg.kafka_follow and len(self.caught_up) == len(self.partitions):
                        return  # every partition read to its end
                    if self.cfg.kafka_follow and self.cfg.idle_timeout_s and \
                            self.clock() - idle_since >= self.cfg.idle_timeout_s:
                        return
                    yield None
                    continue
                idle_since = self.clock()
                yield self._record(message)
        finally:
            self.close()

    def _handle_error(self, kafka, message) -> None:
        error = message.error()
        if error.code() == kafka.KafkaError._PARTITION_EOF:
            self.caught_up.add(partition_key(message.topic(), message.partition()))
        elif error.fatal():
            raise SourceError(f"Kafka at {self.cfg.kafka_servers} failed: {error.str()}")
        else:  # transient (a broker restarting, a rebalance of the cluster): librdkafka retries on its own
            logger.warning("ol_ray: Kafka: %s", error.str())

    def _record(self, message) -> Record:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        key = partition_key(topic, partition)
        self.offsets[key] = offset + 1
        self.caught_up.discard(key)
        value = message.value() or b""
        if self.cfg.max_record_bytes and len(value) > self.cfg.max_record_bytes:
            value = value[: self.cfg.max_record_bytes + 1]  # enough for validation to see it is oversize
        message_key = message.key()
        sample_id = f"{topic}:{partition}:{offset}"
        if self.cfg.kafka_key_as_id and message_key:
            sample_id = message_key.decode("utf-8", errors="replace")
        origin = json.dumps({"topic": topic, "partition": partition, "offset": offset})
        return Record(sample_id, value, JSON, origin)

    def close(self) -> None:
        consumer, self.consumer = getattr(self, "consumer", None), None
        if consumer is not None:
            consumer.close()


class GroupCommitter:
    """Commits the offsets of each checkpoint's cursor to `stream.kafka_group_id`: what the learner trained (or
    left not selected or quarantined) and checkpointed. A consumer of its own, assigned no partitions; a failed
    commit is a warning (the checkpoint, not the group, is what a resume uses)."""

    def __init__(self, cfg: StreamConfig):
        kafka = confluent()
        self.kafka, self.group = kafka, cfg.kafka_group_id
        self.consumer = kafka.Consumer({"bootstrap.servers": cfg.kafka_servers, "group.id": cfg.kafka_group_id,
                                        "enable.auto.commit": False, **cfg.kafka_options})

    def commit(self, cursor: dict[str, Any]) -> None:
        offsets = [self.kafka.TopicPartition(key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1]), offset)
                   for key, offset in cursor.get("offsets", {}).items()]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except self.kafka.KafkaException as error:
            logger.warning("ol_ray: Kafka offset commit to group %s failed: %s", self.group, error)

    def records(self, records: list[dict[str, Any]]) -> None:
        """Commit the cursor of every checkpoint record among `records`."""
        for record in records:
            if record.get("kind") == "checkpoint" and record.get("cursor"):
                self.commit(record["cursor"])

    def close(self) -> None:
        self.consumer.close()


def produce(path: str, cfg: StreamConfig, topic: str, rate: float = 0.0, limit: int = 0, partitions: int = 0,
            options: Optional[dict[str, str]] = None, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """Replay a data file (any format the file source reads, in its configured order) into `topic` as JSON
    messages with the configured text and label fields, keyed by sample id, at `rate` messages per second (0: as
    fast as the broker takes them), at most `limit` (0: all). Rows that do not parse are sent as they are, so the
    consumer's validation quarantines them. Creates the topic with `partitions` partitions first when asked.
    Returns the number of messages delivered."""

    kafka = confluent()
    settings = {"bootstrap.servers": cfg.kafka_servers, "linger.ms": 20, **(options or {})}
    if partitions:
        create_topic(cfg.kafka_servers, topic, partitions, options)
    producer = kafka.Producer(settings)
    delivered, failed = [0], []

    def on_delivery(error, message) -> None:
        if error is not None:
            failed.append(str(error))
        else:
            delivered[0] += 1

    sent = 0
    for record in paced(FileSource(path, cfg).records(), rate, clock, sleep):
        if record is None:
            continue
        try:
            fields = decode_fields(record.raw, record.record_format)
            value = json.dumps({cfg.text_field: fields.get(cfg.text_field),
                                cfg.label_field: fields.get(cfg.label_field)}).encode("utf-8")
        except RowError:
            value = record.raw
        while True:
            try:
                producer.produce(topic, value=value, key=record.sample_id.encode("utf-8"), on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
        sent += 1
        if limit and sent >= limit:
            break
    producer.flush()
    if failed:
        raise SourceError(f"{len(failed)} of {sent} messages were not delivered to {topic}: {failed[0]}")
    return delivered[0]


def create_topic(servers: str, topic: str, partitions: int, options: Optional[dict[str, str]] = None) -> None:
    """Create `topic` with `partitions` partitions (replication 1); an existing topic is left as it is."""
    kafka = confluent()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": servers, **(options or {})})
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=METADATA_TIMEOUT_S)
    except kafka.KafkaException as error:
        if error.args[0].code() != kafka.KafkaError.TOPIC_ALREADY_EXISTS:
            raise SourceError(f"cannot create Kafka topic {topic!r} at {servers}: {error}") from None
