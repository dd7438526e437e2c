import json
import time

import torch

from ol_ray.observe.monitor import NodeGPUs, RateWindow, ResourceMonitor, own_memory


def test_rate_window():
    window = RateWindow(span_s=10)
    for second in range(5):
        window.add(float(second), samples=32, seconds=0.5)
    rates = window.rates(4.0)
    assert rates["busy_s_per_call"] == 0.5
    assert 30 < rates["samples_per_s"] < 40  # 160 samples over 4.5 s
    assert window.rates(100.0)["samples_per_s"] == 0.0  # old reports age out


def test_monitor_snapshot_combines_reports_and_writes_every_sample(tmp_path):
    now = [0.0]
    path = tmp_path / "monitor.jsonl"
    monitor = ResourceMonitor(interval_s=3600, clock=lambda: now[0], path=str(path), history=2)
    try:
        monitor.report("learner", {"samples": 32, "seconds": 0.5, "batch_size": 32, "rss_mb": 900.0, "pid": 7})
        monitor.report("driver", {"queue_depth": 3, "rss_mb": 400.0})
        now[0] = 1.0
        monitor.report("scorer", {"samples": 64, "seconds": 0.2, "pid": 8, "node_id": "n1"})
        snapshot = monitor.sample()
        assert snapshot["learner_step_s"] == 0.5 and snapshot["queue_depth"] == 3
        assert snapshot["learner_rss_mb"] == 900.0 and snapshot["monitor_rss_mb"] > 0
        assert (snapshot["learner_pid"], snapshot["scorer_pid"]) == (7, 8)
        assert snapshot["scorer_samples_per_s"] > 0 and snapshot == monitor.snapshot()
        for _ in range(3):
            monitor.sample()
    finally:
        stopped = monitor.stop()
    assert len(stopped["history"]) == 2  # bounded in memory
    assert stopped["scorer_nodes"] == ["n1"]
    assert len([json.loads(line) for line in path.read_text().splitlines()]) == 4  # all of them on disk


def test_memory_readings_on_this_machine():
    assert own_memory(torch.device("cpu"))["rss_mb"] > 10
    if not torch.cuda.is_available():
        assert NodeGPUs().read() == []  # no GPU: GPU fields are absent, not zero
        monitor = ResourceMonitor(interval_s=3600)
        assert "gpus" not in monitor.sample()
        monitor.stop()


def test_learner_memory_readings_pass_through_and_a_failing_exporter_is_dropped():
    monitor = ResourceMonitor(interval_s=3600)
    try:
        class Broken:
            def set(self, snapshot):
                raise RuntimeError("no metrics agent")

        monitor.gauges = Broken()
        monitor.report("learner", {"memory_per_sample_mb": 3.5, "memory_ceiling": None, "samples": 8, "seconds": 0.1})
        snapshot = monitor.sample()
        assert snapshot["learner_memory_per_sample_mb"] == 3.5 and "learner_memory_ceiling" not in snapshot
        assert monitor.gauges is None and monitor.sample()["learner_memory_per_sample_mb"] == 3.5
    finally:
        monitor.stop()


def test_every_numeric_reading_becomes_a_gauge():
    from ol_ray.observe.monitor import RayGauges

    class RecordingGauge:
        made: dict = {}

        def __init__(self, name, description, tag_keys):
            self.name, self.tag_keys, self.values = name, tag_keys, []
            RecordingGauge.made[name] = self

        def set(self, value, tags=None):
            self.values.append((value, tags))

    gauges = RayGauges.__new__(RayGauges)
    gauges.gauge_class, gauges.gauges = RecordingGauge, {}
    gauges.set({"time": 1.0, "learner_step_s": 0.5, "queue_depth": 3, "learner_pid": 7, "flag": True,
                "gpus": [{"index": 0, "used_mb": 1.0, "free_mb": 2.0, "total_mb": 3.0, "utilisation": 0.5}]})
    made = RecordingGauge.made
    assert {"ol_ray_learner_step_s", "ol_ray_queue_depth", "ol_ray_gpu_free_mb"} <= set(made)
    assert "ol_ray_time" not in made and "ol_ray_learner_pid" not in made and "ol_ray_flag" not in made
    assert made["ol_ray_gpu_free_mb"].values == [(2.0, {"gpu": "0"})]
    assert made["ol_ray_gpu_free_mb"].tag_keys == ("gpu",)


def test_a_failing_reading_is_logged_and_leaves_no_stale_snapshot(caplog):
    import threading

    monitor = ResourceMonitor(interval_s=0.05)
    monitor.report("learner", {"rss_mb": 512.0, "updates": 3})
    monitor.sample()
    assert monitor.snapshot()["learner_rss_mb"] == 512.0
    failed = threading.Event()

    def broken():
        failed.set()
        raise OSError("NVML: driver gone")

    monitor.gpus.read = broken
    assert failed.wait(5)
    time.sleep(0.2)
    snapshot = monitor.snapshot()
    monitor.stop()
    assert "learner_rss_mb" not in snapshot and snapshot["reading_failures"] >= 1
    assert "NVML: driver gone" in snapshot["reading_error"] and "resource monitor reading failed" in caplog.text
    assert caplog.text.count("resource monitor reading failed") == 1  # once, not once a reading
