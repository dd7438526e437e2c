"""Feeding the learner: the stream, admitted chunk by chunk to the scorer pool, delivered to the learner by reference.

    StreamReader --windows--> Feeder: admit chunks (Admission) --> ScorerPool --(ChunkResult, block ref)--> Feeder
                                 ^                                                                        |
                                 +------------ learner's status after each call <---- LearnerActor <------+ block ref

A reader thread frames the stream into windows (a paced or followed stream blocks there, never here). The feeder's
loop, in the driver's main thread, admits chunks of the oldest window not yet fully admitted as admission control
allows, reads the small ChunkResult of each scored chunk, and hands the block references on to the learner in
window order (in stream order with scoring.preserve_order), with at most `learner.max_in_flight` learner calls
outstanding. The driver never fetches a block: the learner's process pulls it from the scorer's. When every chunk of
a window has been delivered, the learner is told the window ended (its cursor, rows read and quarantined): the
consistent point for a checkpoint. A window of a new stream phase is announced to the learner before its first chunk.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ol_ray.config.schema import Config
from ol_ray.data.source import Source, Window, windows
from ol_ray.driver.admission import Admission
from ol_ray.observe.monitor import process_rss_mb
from ol_ray.scoring.chunks import Chunk, ChunkResult

IDLE_TICK_S = 1.0  # with no scored candidates for this long, let the learner check a time-driven policy
WAIT_S = 0.05  # longest wait for anything in one turn of the loop
CANCEL_CHECK_S = 0.1  # a reader blocked on a full queue checks this often whether it was cancelled
logger = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """The run could not complete; the message says which part failed."""


class LearnerLost(RuntimeError):
    """The learner actor died; Ray restarts it from the newest checkpoint."""


def one_line(error: BaseException) -> str:
    """The line of a (possibly remote, multi-line) error that says what went wrong."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    unindented = [line for line in str(error).strip().splitlines() if line.strip() and not line[0].isspace()]
    named = [line for line in unindented if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (named or unindented or lines)[-1]


def learner_reply(ref: Any) -> Any:
    """A learner call's result; LearnerLost when the actor died or the reply comes from a restarted incarnation."""
    import ray

    try:
        reply = ray.get(ref)
    except ray.exceptions.RayActorError as error:
        raise LearnerLost(one_line(error)) from None
    if reply is None:
        raise LearnerLost("the learner restarted from its checkpoint")
    return reply


class StreamReader(threading.Thread):
    """Frames the source into windows ahead of admission, at most `stream.read_ahead_windows` queued. Items:
    ("window", Window),
    ("end", None), ("error", exception)."""

    def __init__(self, source: Source, point: dict[str, Any], cfg: Config):
        super().__init__(name="ol-ray-stream-reader", daemon=True)
        self.stopped = threading.Event()
        self.windows_iter = windows(source, cfg.stream, first_index=point["windows_done"],
                                    already_read=point["samples_read"], stop=self.stopped)
        self.items: queue.Queue = queue.Queue(maxsize=cfg.stream.read_ahead_windows)

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self.stopped.is_set():
            try:
                self.items.put(item, timeout=CANCEL_CHECK_S)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for window in self.windows_iter:
                if not self._put(("window", window)):
                    return
            self._put(("end", None))
        except BaseException as error:  # surfaced in the feeder's loop
            self._put(("error", error))
        finally:
            self.windows_iter.close()  # the source's own cleanup (a Kafka consumer's close) runs here, now

    def cancel(self, timeout_s: float = 30.0) -> None:
        """Stop reading (the source is checked at every record and idle poll) and wait for the thread to end. It
        holds no Ray resources; one stuck in a read past `timeout_s` is named in a warning and left to its read."""
        self.stopped.set()
        self.join(timeout_s)
        if self.is_alive():
            logger.warning("ol_ray: the stream reader did not stop within %g s (a read blocked in the source); "
                           "it ends with its read", timeout_s)


@dataclass
class OpenWindow:
    """A window between the reader and its end_window call."""

    window: Window
    admitted: int = 0  # rows admitted so far
    chunks: int = 0  # chunks admitted
    delivered: int = 0  # chunks whose results came back and went on
    quarantined: int = 0  # rejected by scorers (validation, tokenization)

    @property
    def fully_admitted(self) -> bool:
        return self.admitted == len(self.window)

    @property
    def complete(self) -> bool:
        return self.fully_admitted and self.delivered == self.chunks


@dataclass
class PendingChunk:
    chunk: Chunk
    result_ref: Any
    block_ref: Any
    result: Optional[ChunkResult] = None


@dataclass
class Call:
    ref: Any
    kept: int = 0  # candidates it carried


@dataclass
class Feeder:
    """One segment of a run: from the learner's resume point to the stream's end (or the learner's budget)."""

    cfg: Config
    actors: dict[str, Any]
    pool: Any  # ScorerPool
    reader: StreamReader
    point: dict[str, Any]  # where the learner stands: incarnation, phase, buffered, pool
    write: Callable[[list[dict[str, Any]]], None]  # metric records, in the order the learner made them
    window_read: Callable[[int], None]  # a window's rows started to be admitted
    sequence: int = 0
    windows_done: int = 0
    open_windows: collections.deque = field(default_factory=collections.deque)
    pending: collections.deque = field(default_factory=collections.deque)
    calls: collections.deque = field(default_factory=collections.deque)
    stream_ended: bool = False
    stopping: bool = False  # the learner has reached its update budget: no window after the open ones
    last_activity: float = field(default_factory=time.monotonic)
    last_reading: float = field(default_factory=time.monotonic)
    ahead: Optional[tuple[str, Any]] = None  # a reader item taken while waiting, not yet opened

    def __post_init__(self) -> None:
        self.admission = Admission(self.cfg.scoring.max_lead_updates, self.point["pool"],
                                   buffered=self.point["buffered"])
        self.phase = self.point.get("phase")
        self.incarnation = self.point["incarnation"]

    def run(self) -> int:
        """Feed the learner until the stream ends; returns the windows completed. Raises LearnerLost when the
        learner died (or restarted), PipelineError when reading or scoring failed."""
        while True:
            busy = self._read_window()
            busy |= self._admit()
            busy |= self._collect_results()
            busy |= self._deliver()
            busy |= self._collect_answers(block=False)
            if self._finished():
                while self.calls:
                    self._collect_answers(block=True)
                return self.windows_done
            self._keep_time(busy)

    # --- the stream side ---------------------------------------------------------------------------------------
    def _read_window(self) -> bool:
        """Open the next window once every open one is fully admitted (the reader reads ahead meanwhile)."""
        if self.stream_ended or self.stopping or any(not w.fully_admitted for w in self.open_windows):
            return False
        try:
            kind, item = self.ahead or self.reader.items.get_nowait()
        except queue.Empty:
            return False
        self.ahead = None
        if kind == "error":
            raise PipelineError(f"reading the stream failed: {one_line(item)}") from item
        if kind == "end":
            self.stream_ended = True
            return True
        self.window_read(len(item))
        self.open_windows.append(OpenWindow(item))
        return True

    def _admit(self) -> bool:
        """Chunks of the window being admitted, while admission control and the scorer pool allow."""
        admitting = next((w for w in self.open_windows if not w.fully_admitted), None)
        admitted = False
        while admitting is not None and not admitting.fully_admitted:
            allowance = self.admission.allowance()
            if allowance <= 0 or not self.pool.has_room(backlog=True):
                break
            size = min(self.cfg.scoring.batch_size, allowance, len(admitting.window) - admitting.admitted)
            records = admitting.window.records[admitting.admitted:admitting.admitted + size]
            chunk = Chunk(self.sequence, admitting.window.index, tuple(records),
                          admitting.window.record_format)
            result_ref, block_ref = self.pool.submit(chunk)
            self.pending.append(PendingChunk(chunk, result_ref, block_ref))
            self.sequence += 1
            self.admission.admitted(size)
            admitting.admitted += size
            admitting.chunks += 1
            admitted = True
        return admitted

    def _collect_results(self) -> bool:
        """Read the ChunkResult of every scored chunk (small; its block stays where the scorer put it)."""
        import ray

        waiting = [p for p in self.pending if p.result is None]
        if not waiting:
            return False
        done, _ = ray.wait([p.result_ref for p in waiting], num_returns=len(waiting), timeout=0)
        finished = set(done)
        for entry in waiting:
            if entry.result_ref in finished:
                try:
                    entry.result = ray.get(entry.result_ref)
                except ray.exceptions.RayError as error:  # a scorer may have failed because the learner died
                    if learner_reply(self.actors["learner"].info.remote())["incarnation"] != self.incarnation:
                        raise LearnerLost("the learner restarted while a chunk was scored") from None
                    raise PipelineError(f"scoring a chunk failed: {one_line(error)}") from error
        return bool(done)

    # --- the learner side --------------------------------------------------------------------------------------
    def _room(self) -> bool:
        return len(self.calls) < self.cfg.learner.max_in_flight

    def _call(self, method: str, *args: Any, kept: int = 0) -> None:
        ref = getattr(self.actors["learner"], method).remote(*args, self.incarnation)
        self.calls.append(Call(ref, kept))

    def _deliver(self) -> bool:
        """Hand scored blocks to the learner in window order (stream order with preserve_order), announcing a new
        phase before its first block, and end each window once all of its chunks went on; at most
        `learner.max_in_flight` calls outstanding (the loop goes on meanwhile, never blocked on the learner)."""
        delivered = False
        while self.open_windows and self._room():
            oldest = self.open_windows[0]
            entry = None if oldest.complete else self._next_deliverable(oldest.window.index)
            if entry is None and not oldest.complete:
                break
            phase = oldest.window.record_format.phase
            if phase and phase != self.phase:  # calls run in order: the old phase's candidates go first
                self.phase = phase
                self._call("begin_phase", phase)
            elif oldest.complete:
                window = oldest.window
                self._call("end_window", window.index, window.cursor, len(window), oldest.quarantined)
                self.open_windows.popleft()
                self.windows_done += 1
            else:
                self.pending.remove(entry)
                result = entry.result
                if result.kept:
                    self._call("add_candidates", entry.block_ref, kept=result.kept)
                self.admission.delivered(result.rows, result.kept)
                oldest.delivered += 1
                oldest.quarantined += result.quarantined
                self.actors["monitor"].report.remote("driver", {"queue_depth": self.admission.outstanding,
                                                                "rss_mb": process_rss_mb()})
            delivered = True
        return delivered

    def _next_deliverable(self, window_index: int) -> Optional[PendingChunk]:
        for entry in self.pending:
            if entry.chunk.window != window_index:
                return None
            if entry.result is not None:
                return entry
            if self.cfg.scoring.preserve_order:
                return None
        return None

    def _collect_answers(self, block: bool) -> bool:
        """The learner's answers, oldest first: records to the outputs, status to admission control."""
        import ray

        answered = False
        while self.calls and (block or ray.wait([self.calls[0].ref], timeout=0)[0]):
            call = self.calls.popleft()
            records, status = learner_reply(call.ref)
            self.write(records)
            self.admission.answered(call.kept, status["buffered"], status["pool"])
            if status["done"] and not self.stopping:
                self.stopping = True  # past the budget: the open windows go on (their samples are accounted for)
            answered = True
            block = False
        return answered

    def _finished(self) -> bool:
        return (self.stream_ended or self.stopping) and not self.open_windows and not self.pending

    def _keep_time(self, busy: bool) -> None:
        """Wait briefly when nothing moved; tick a time-driven policy when idle; log the monitor's readings."""
        import ray

        now = time.monotonic()
        if busy:
            self.last_activity = now
        else:
            refs = [p.result_ref for p in self.pending if p.result is None] + [c.ref for c in self.calls]
            if refs:
                ray.wait(refs, num_returns=1, timeout=WAIT_S, fetch_local=False)
            elif self.ahead is None:  # only the stream can bring work: wait on it
                try:
                    self.ahead = self.reader.items.get(timeout=WAIT_S)
                except queue.Empty:
                    pass
            else:  # a window waits for admission (a time-driven policy holds its pool): only time helps
                time.sleep(WAIT_S)
            if not self.calls and now - self.last_activity >= IDLE_TICK_S:
                self._call("tick")  # nothing scored for a while: a time-driven batch policy may be due
                self.last_activity = now
        if now - self.last_reading >= self.cfg.output.monitor_every_s:  # the monitor's readings, into metrics
            self.last_reading = now
            reading = ray.get(self.actors["monitor"].snapshot.remote())
            self.write([{"kind": "monitor", "update": reading.get("learner_updates", 0), **reading}])
