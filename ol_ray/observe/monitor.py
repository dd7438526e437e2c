"""Resource monitor: GPU memory, step time, throughput, queue depth and memory, sampled once a second.

Learner, scorers and driver push small reports (`report(role, stats)`, fire-and-forget); a background thread turns
them into rates once a second, adds GPU memory (NVML for every GPU on the node where pynvml is installed,
the learner's own device readings otherwise) and keeps a bounded history, writing every snapshot to monitor.jsonl.
Batch policies read `snapshot()`. Plain Python; run it as an actor with ray.remote(num_cpus=0)(ResourceMonitor).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the monitor actor's process never needs torch: importing it there is seconds of CPU
    import torch

logger = logging.getLogger(__name__)
SAMPLE_EVERY_S = 1.0  # a snapshot a second: fresh enough for a batch policy deciding once per update
HISTORY = 600  # snapshots kept: the last ten minutes
STOP_WAIT_S = 5.0  # how long stop() waits for a reading in progress


def process_rss_mb(pid: Optional[int] = None) -> float:
    """Resident memory of a process (default: this one) in MiB."""
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def own_memory(device: "torch.device") -> dict[str, float]:
    """This process's RSS and, on a GPU, its allocated, cached (reserved), peak, free and total device memory (MiB)."""
    stats = {"rss_mb": process_rss_mb()}
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        stats.update(gpu_allocated_mb=torch.cuda.memory_allocated(device) / 2**20,
                     gpu_reserved_mb=torch.cuda.memory_reserved(device) / 2**20,
                     gpu_peak_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                     gpu_free_mb=free / 2**20, gpu_total_mb=total / 2**20)
    return stats


class NodeGPUs:
    """Memory of every GPU on this node through NVML (the nvidia-ml-py package), where it is installed.

    NVML reads without creating a CUDA context, so the monitor (an actor without GPUs) costs no GPU memory; the
    learner reports its own device's allocated and peak memory. Empty where NVML or a GPU is missing."""

    def __init__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no nvidia-ml-py, or no NVIDIA driver: no readings
            self.nvml, self.handles = None, []

    def read(self) -> list[dict[str, float]]:
        readings = []
        for index, handle in enumerate(self.handles):
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation = self.nvml.nvmlDeviceGetUtilizationRates(handle)
            readings.append({"index": index, "used_mb": memory.used / 2**20, "free_mb": memory.free / 2**20,
                             "total_mb": memory.total / 2**20, "utilisation": utilisation.gpu / 100})
        return readings


class RateWindow:
    """Samples per second and mean seconds per call over the last `span_s` seconds of reports."""

    def __init__(self, span_s: float = 10.0):
        self.span_s = span_s
        self.events: collections.deque = collections.deque()

    def add(self, now: float, samples: float, seconds: float) -> None:
        self.events.append((now, samples, seconds))

    def rates(self, now: float) -> dict[str, float]:
        while self.events and now - self.events[0][0] > self.span_s:
            self.events.popleft()
        if not self.events:
            return {"samples_per_s": 0.0, "busy_s_per_call": 0.0, "busy_fraction": 0.0}
        samples = sum(e[1] for e in self.events)
        busy = sum(e[2] for e in self.events)
        span = max(now - self.events[0][0] + self.events[0][2], 1e-6)
        return {"samples_per_s": samples / span, "busy_s_per_call": busy / len(self.events),
                "busy_fraction": min(1.0, busy / span)}


class RayGauges:
    """Every numeric reading of a snapshot as a Ray gauge `ol_ray_<name>` (GPU readings tagged with the GPU index),
    exported through Ray's metrics agent to Prometheus and the dashboard."""

    SKIP = ("time", "learner_pid", "scorer_pid")

    def __init__(self):
        from ray.util.metrics import Gauge

        self.gauge_class = Gauge
        self.gauges: dict[str, Any] = {}

    def _gauge(self, name: str, tags: tuple[str, ...] = ()):
        if name not in self.gauges:
            self.gauges[name] = self.gauge_class(f"ol_ray_{name}", description=f"ol_ray monitor reading {name}",
                                                 tag_keys=tags)
        return self.gauges[name]

    def set(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            if name not in self.SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._gauge(name).set(value)
        for gpu in snapshot.get("gpus", []):
            for name in ("used_mb", "free_mb", "total_mb", "utilisation"):
                self._gauge("gpu_" + name, ("gpu",)).set(gpu[name], tags={"gpu": str(gpu["index"])})


class ResourceMonitor:
    """Collects reports and samples resources once a second; `snapshot()` is what batch policies read."""

    def __init__(self, interval_s: float = SAMPLE_EVERY_S, history: int = HISTORY, clock=time.time,
                 path: Optional[str] = None, export: bool = False):
        self.interval_s = interval_s
        self.gauges = RayGauges() if export else None  # Ray's metrics (Prometheus), inside a Ray actor only
        self.clock = clock
        self.gpus = NodeGPUs()
        self.file = open(path, "a", encoding="utf-8") if path else None  # every snapshot, not only the recent ones
        self.lock = threading.Lock()
        self.rates = {"learner": RateWindow(), "scorer": RateWindow()}
        self.latest: dict[str, dict[str, Any]] = {}
        self.scorer_nodes: set[str] = set()  # the Ray nodes scoring ran on
        self.history: collections.deque = collections.deque(maxlen=history)
        self.current: dict[str, Any] = {"time": clock()}
        self.failures = self.failures_total = 0  # failed readings in a row, and in all
        self.last_failure_log = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ol-ray-monitor", daemon=True)
        self.thread.start()

    def report(self, role: str, stats: dict[str, Any]) -> None:
        """A report from `role` (learner, scorer, driver): samples and seconds feed rates; the rest is kept as is."""
        now = self.clock()
        with self.lock:
            if role == "scorer" and stats.get("node_id"):
                self.scorer_nodes.add(stats["node_id"])
            if role in self.rates and "samples" in stats:
                self.rates[role].add(now, stats["samples"], stats.get("seconds", 0.0))
            self.latest[role] = {**self.latest.get(role, {}), **stats}

    def sample(self) -> dict[str, Any]:
        """Take one sample now (the background thread calls this every interval_s)."""
        now = self.clock()
        gpus = self.gpus.read()
        with self.lock:
            learner = self.latest.get("learner", {})
            driver = self.latest.get("driver", {})
            current = {
                "time": now,
                "learner_step_s": self.rates["learner"].rates(now)["busy_s_per_call"],
                "learner_samples_per_s": self.rates["learner"].rates(now)["samples_per_s"],
                "learner_busy_fraction": self.rates["learner"].rates(now)["busy_fraction"],
                "scorer_samples_per_s": self.rates["scorer"].rates(now)["samples_per_s"],
                "queue_depth": driver.get("queue_depth", 0),
                "driver_rss_mb": driver.get("rss_mb", 0.0),
                "learner_rss_mb": learner.get("rss_mb", 0.0),
                "monitor_rss_mb": process_rss_mb(),
                "learner_batch_size": learner.get("batch_size", 0),
                "learner_updates": learner.get("updates", 0),
                "learner_pid": learner.get("pid"),
                "scorer_pid": self.latest.get("scorer", {}).get("pid"),
            }
            if "quarantine" in self.latest:  # the quarantine sink's own reports (bench memory reads them)
                current["quarantine_rss_mb"] = self.latest["quarantine"].get("rss_mb", 0.0)
            if gpus:  # absent, not zero, on a machine without GPUs
                current["gpus"] = gpus
            for key in ("gpu_allocated_mb", "gpu_reserved_mb", "gpu_peak_mb", "gpu_free_mb", "gpu_total_mb",
                        "memory_per_sample_mb", "memory_ceiling"):
                if learner.get(key) is not None:
                    current["learner_" + key] = learner[key]
            self.current = current
            self.history.append(current)
            if self.file is not None:
                self.file.write(json.dumps(current) + "\n")
                self.file.flush()
        if self.gauges is not None:
            try:
                self.gauges.set(current)
            except Exception as error:  # metrics are a view; a failing exporter must not stop the readings
                logger.warning("ol_ray: monitor metrics export failed (%s); continuing without it", error)
                self.gauges = None
        return current

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.current)

    def get_history(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.history)

    def stop(self) -> dict[str, Any]:
        """Stop sampling and close the file; returns the recent history and the nodes scoring ran on."""
        self.stopped.set()
        self.thread.join(timeout=STOP_WAIT_S)
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None
            return {"history": list(self.history), "scorer_nodes": sorted(self.scorer_nodes)}

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.sample()
                self.failures = 0
            except Exception as error:  # the monitor lives on and the next second tries again, but never silently
                self._failed(error)

    def _failed(self, error: Exception) -> None:
        """A reading failed: log it (the first, then once a minute while it goes on) and drop the last snapshot, so
        a policy reads no figures rather than stale ones it takes for current."""
        self.failures += 1
        self.failures_total += 1
        now = self.clock()
        if self.failures == 1 or now - self.last_failure_log >= 60.0:
            self.last_failure_log = now
            logger.warning("ol_ray: resource monitor reading failed (%d in a row, %d in all): %s", self.failures,
                           self.failures_total, error, exc_info=error)
        with self.lock:
            self.current = {"time": now, "reading_failures": self.failures, "reading_error": repr(error)}
