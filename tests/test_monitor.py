import torch

from ol_ray.monitor import RateWindow, ResourceMonitor, gpu_memory, own_memory


def test_rate_window():
    window = RateWindow(span_s=10)
    for second in range(5):
        window.add(float(second), samples=32, seconds=0.5)
    rates = window.rates(4.0)
    assert rates["busy_s_per_call"] == 0.5
    assert 30 < rates["samples_per_s"] < 40  # 160 samples over 4.5 s
    assert window.rates(100.0)["samples_per_s"] == 0.0  # old reports age out


def test_monitor_snapshot_combines_reports():
    now = [0.0]
    monitor = ResourceMonitor(interval_s=3600, clock=lambda: now[0])
    try:
        monitor.report("learner", {"samples": 32, "seconds": 0.5, "batch_size": 32, "rss_mb": 900.0})
        monitor.report("driver", {"queue_depth": 3, "rss_mb": 400.0})
        now[0] = 1.0
        monitor.report("scorer", {"samples": 64, "seconds": 0.2})
        snapshot = monitor.sample()
        assert snapshot["learner_step_s"] == 0.5 and snapshot["queue_depth"] == 3
        assert snapshot["learner_rss_mb"] == 900.0 and snapshot["monitor_rss_mb"] > 0
        assert snapshot["scorer_samples_per_s"] > 0 and snapshot == monitor.snapshot()
        assert monitor.get_history() == [snapshot]
    finally:
        monitor.stop()


def test_memory_readings_on_this_machine():
    assert own_memory(torch.device("cpu"))["rss_mb"] > 10
    readings = gpu_memory()
    assert isinstance(readings, list)
    if not torch.cuda.is_available():
        assert readings == [] or all(r["total_mb"] > 0 for r in readings)
