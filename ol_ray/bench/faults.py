"""Fault injection into a real run: kill, at seeded random points, the learner, a scorer, the weight store, the
monitor, the quarantine sink and the driver (which is then resumed), and measure how each recovered.

The run's driver is `ol-ray run` in a subprocess that joins a Ray the caller started (`ray_address`), so killing it
is killing a real driver: Ray ends the actors it owned, and `ol-ray run --resume` continues from the newest
checkpoint. Faults are injected in the order of a seeded schedule, each once the run has made its update count and
the fault before it has recovered (a new update record after it), and every fault is recorded with when it came,
how long the run took to make its next update, and how many updates it undid (a learner or driver fault rolls
back to the checkpoint). Plain subprocesses and files; the caller's Ray is only used to find and kill actors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ol_ray.driver.cluster import NAMESPACE, actor_name
from ol_ray.jsonl import read_jsonl

__all__ = ["Fault", "FaultEvent", "schedule", "run_with_faults", "FAULTS"]

FAULTS = ("learner", "scorer", "weights", "learner", "monitor", "quarantine", "driver")


@dataclass(frozen=True)
class Fault:
    target: str  # learner, scorer, weights, monitor, quarantine or driver
    at_update: int  # injected once the run has made this many updates


@dataclass(frozen=True)
class FaultEvent:
    target: str
    at_update: int  # the updates made when it was injected
    at_s: float  # seconds since the run started
    recovered_s: Optional[float]  # until the next update record after it (None: the run ended first)
    updates_undone: int  # reported updates rolled back to the checkpoint (learner and driver faults); a lower bound:
    #   what the learner made but had not reported yet is undone too


def schedule(seed: int, updates: int, faults: Sequence[str] = FAULTS) -> list[Fault]:
    """`faults` at seeded random points spread over 10% to 75% of a run of `updates` updates, in a random order
    (the driver last, so its resume finishes the run), at least one update apart."""
    rng = np.random.default_rng(seed)
    order = [f for f in faults if f != "driver"]
    rng.shuffle(order)
    order += [f for f in faults if f == "driver"]
    points = np.sort(rng.choice(np.arange(max(1, updates // 10), max(2, updates * 3 // 4)), size=len(order),
                                replace=updates * 3 // 4 - updates // 10 < len(order)))
    return [Fault(target, int(point)) for target, point in zip(order, points)]


def _records(run_dir: str) -> list[dict[str, Any]]:
    return read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def _updates(records: list[dict[str, Any]]) -> int:
    return max((r["update"] for r in records if r["kind"] == "update"), default=0)


def _kill(target: str, run_dir: str, driver: subprocess.Popen) -> None:
    import ray

    if target == "driver":
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    elif target == "scorer":
        monitor = read_jsonl(os.path.join(run_dir, "monitor.jsonl"))
        pid = next((r["scorer_pid"] for r in reversed(monitor) if r.get("scorer_pid")), None)
        if pid is None:
            raise RuntimeError("no scorer has reported to the monitor yet")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it had just been restarted; the next report names the new one
            pass
    else:
        ray.kill(ray.get_actor(actor_name(target, run_dir), namespace=NAMESPACE), no_restart=False)


def _wait_until_gone(run_dir: str, timeout_s: float = 60.0) -> None:
    """After the driver's death, until Ray has ended the actors it owned (their names are taken until then)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(actor_name("learner", run_dir), namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the killed driver's actors were still alive after {timeout_s:g} s")


ROLLS_BACK = ("learner", "driver")  # faults after which the run resumes from a checkpoint


def _recovery(target: str, records: list[dict[str, Any]], since: float, made: int) -> tuple[bool, int]:
    """(whether the run made an update since the fault at epoch second `since`, updates it undid). A learner or
    driver fault has recovered once an update follows the resume record written since (a rewind cuts the records
    after its checkpoint, so they are told apart by time, not position; an update reply in flight at the kill does
    not count), and undid the reported updates past that checkpoint; any other fault once a newer update came."""
    if target not in ROLLS_BACK:
        return _updates(records) > made, 0
    resumes = [i for i, r in enumerate(records) if r["kind"] == "resume" and r["time"] >= since]
    if not resumes:
        return False, 0
    last = resumes[-1]
    return any(r["kind"] == "update" for r in records[last + 1:]), made - records[last]["update"]


def _driver(command: Sequence[str], log: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ol_ray.cli", "run", *command], stdout=log, stderr=log,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run_with_faults(config: Optional[str], overrides: Sequence[str], run_dir: str, faults: Sequence[Fault],
                    ray_address: str, timeout_s: float = 900.0, poll_s: float = 0.2,
                    resume_overrides: Sequence[str] = (),
                    before_resume: Optional[Callable[[str], None]] = None) -> tuple[dict, list[FaultEvent]]:
    """Run `ol-ray run config overrides` joined to `ray_address` with output.run_dir=`run_dir`, injecting `faults`;
    returns the final summary.json and the fault events. After a driver fault, `before_resume(run_dir)` runs (a
    test may damage the newest checkpoint there) and the driver resumes with `resume_overrides` added. Raises
    RuntimeError when the run does not finish."""
    joined = [*overrides, f"ray.address={ray_address}", f"output.run_dir={run_dir}", "output.progress=false"]
    os.makedirs(run_dir, exist_ok=True)
    log = open(os.path.join(run_dir, "chaos-driver.log"), "a", encoding="utf-8")
    started = time.monotonic()
    deadline = started + timeout_s
    driver = _driver([config, *joined] if config else joined, log)
    events: list[FaultEvent] = []
    pending = list(faults)
    waiting: Optional[tuple[Fault, float, float, int]] = None  # injected: (fault, epoch s, monotonic s, updates)
    try:
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the run did not finish within {timeout_s:g} s (see {log.name})")
            records = _records(run_dir)
            updates = _updates(records)
            if waiting is not None:
                fault, since, at, made = waiting
                recovered, undone = _recovery(fault.target, records, since, made)
                if recovered or driver.poll() is not None:
                    events.append(FaultEvent(fault.target, made, round(at - started, 2),
                                             round(time.monotonic() - at, 2) if recovered else None, undone))
                    waiting = None
            if waiting is None and pending and updates >= pending[0].at_update and driver.poll() is None:
                fault = pending.pop(0)
                at = time.monotonic()
                waiting = (fault, time.time(), at, updates)
                _kill(fault.target, run_dir, driver)
                if fault.target == "driver":
                    _wait_until_gone(run_dir)
                    if before_resume is not None:
                        before_resume(run_dir)
                    driver = _driver(["--resume", run_dir, *joined, *resume_overrides], log)
            if driver.poll() is not None and waiting is None:
                if driver.returncode != 0:
                    raise RuntimeError(f"the driver exited with {driver.returncode} (see {log.name})")
                break
            time.sleep(poll_s)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.close()
    if pending:
        raise RuntimeError(f"the run ended before {[f.target for f in pending]} could be injected")
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
        return json.load(handle), events


def event_rows(events: Sequence[FaultEvent]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(event) for event in events]
