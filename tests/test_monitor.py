import json

import torch

from ol_ray.monitor import NodeGPUs, RateWindow, ResourceMonitor, own_memory


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
