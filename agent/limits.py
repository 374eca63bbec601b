"""What one client may ask of a shared device, enforced on the agent before any work starts.

An agent left running on someone's board serves clients it does not control: a request for 10^6
distinct inputs, 2^31 runs, a NaN deadline, or a stream that sends one message and then nothing,
must end in one clear error instead of a worker at 1 GB or a device held forever.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from protos import edge_agent_pb2 as pb


@dataclass
class Limits:
    max_runs: int = 1_000_000            # steady-state samples kept in memory: 8 MB at most
    max_seconds: float = 600.0           # steady state, warm-up and min_seconds each
    max_warmup_runs: int = 100_000
    max_distinct_inputs: int = 64        # random input sets held by the worker at once
    max_sample_batch: int = 10_000       # samples per streamed message (80 KB)
    max_threads: int = 256
    max_deadline_s: float = 24 * 3600.0
    lock_wait_s: float = 60.0            # how long a call waits for the device before it is told who holds it
    infer_idle_s: float = 60.0           # an Infer stream silent this long releases the device
    push_idle_s: float = 60.0            # an upload silent this long is cut (its bytes stay for a resume)
    stream_slots: int = 24               # concurrent Push/Benchmark/Infer calls; the rest of the pool answers queries
    max_message_bytes: int = 64 << 20    # one gRPC message either way


class LimitError(ValueError):
    """A request outside the agent's limits; its message is the one line the user sees."""


def _finite(name: str, v: float, lo: float, hi: float, flag: str) -> None:
    if not math.isfinite(v):
        raise LimitError(f"{name} must be a finite number, not {v}")
    if v < lo:
        raise LimitError(f"{name} must be >= {lo:g}, got {v:g}")
    if v > hi:
        raise LimitError(f"{name} {v:g} exceeds this agent's cap of {hi:g} ({flag})")


def check_run_options(o: pb.RunOptions, lim: Limits, cpu_count: int) -> None:
    """LimitError for any option that is NaN, negative or beyond the agent's caps; checked before the device
    lock is taken or a worker started, so a bad request costs nothing."""
    _finite("threads", o.threads, 0, min(lim.max_threads, max(1, cpu_count) * 8), "threads > 8x the CPUs")
    if o.HasField("runs"):
        _finite("runs", o.runs, 0, lim.max_runs, "agent serve --max-runs")
    if o.HasField("warmup_runs"):
        _finite("warmup_runs", o.warmup_runs, 0, lim.max_warmup_runs, "agent serve --max-runs")
    for name in ("min_seconds", "max_seconds", "warmup_seconds"):
        if o.HasField(name):
            _finite(name, getattr(o, name), 0, lim.max_seconds, "agent serve --max-run-seconds")
    if o.HasField("target_ci"):
        _finite("target_ci", o.target_ci, 0, 1, "a fraction of the median")
    _finite("distinct_inputs", o.distinct_inputs, 0, lim.max_distinct_inputs, "agent serve --max-distinct-inputs")
    _finite("sample_batch", o.sample_batch, 0, lim.max_sample_batch, "samples per message")
    _finite("deadline_s", o.deadline_s, 0, lim.max_deadline_s, "one day")


class DeviceLock:
    """The one-run-at-a-time lock, which knows who holds it: a waiter past its deadline is told who and
    since when, and a waiter whose client left stops waiting at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holder: Optional[str] = None
        self.since = 0.0

    def acquire(self, who: str, wait_s: float, context: Any) -> None:
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            if self._lock.acquire(timeout=min(0.25, max(0.0, deadline - time.monotonic()))):
                self.holder, self.since = who, time.time()
                return
            if context is not None and not context.is_active():
                raise LimitError("the client went away while waiting for the device")
            if time.monotonic() >= deadline:
                held = self.holder or "another call"
                ago = time.time() - self.since if self.since else 0.0
                raise DeviceBusy(f"device busy: held by {held} since "
                                 f"{time.strftime('%H:%M:%S', time.localtime(self.since))} ({ago:.0f} s); "
                                 f"waited {wait_s:.0f} s, retry later")

    def release(self) -> None:
        self.holder, self.since = None, 0.0
        self._lock.release()


class DeviceBusy(LimitError):
    pass


class Slots:
    """A cap on concurrent streaming calls, so stalled uploads and runs can never take every handler thread
    (GetInfo / List / Stat always find one)."""

    def __init__(self, n: int):
        self.n = n
        self._sem = threading.BoundedSemaphore(n)

    def take(self) -> bool:
        return self._sem.acquire(blocking=False)

    def give(self) -> None:
        self._sem.release()


_END = object()


class IdleStream:
    """Reads a client stream in a helper thread so the handler can wait for the next message with a
    timeout (gRPC's request iterator has none). `next_or_idle()` returns the next message, None at the
    end of the stream, or raises StreamIdle after `idle_s` without one."""

    def __init__(self, it: Iterator[Any], idle_s: float):
        self.idle_s = idle_s
        self._q: queue.Queue[Any] = queue.Queue(maxsize=4)     # bounded: a fast sender waits, memory stays flat
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        threading.Thread(target=self._pump, args=(it,), daemon=True, name="idle-stream").start()

    def _put(self, m: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(m, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False            # the handler is gone: drop the message and let the thread end

    def _pump(self, it: Iterator[Any]) -> None:
        try:
            for m in it:
                if not self._put(m):
                    return
        except BaseException as e:  # noqa: BLE001 - a cancelled call ends the iterator with an exception
            self._error = e
        self._put(_END)

    def next_or_idle(self) -> Any:
        try:
            m = self._q.get(timeout=self.idle_s if self.idle_s > 0 else None)
        except queue.Empty:
            raise StreamIdle(f"no message for {self.idle_s:.0f} s") from None
        return None if m is _END else m

    def __iter__(self) -> Iterator[Any]:
        while (m := self.next_or_idle()) is not None:
            yield m

    def close(self) -> None:
        self._stop.set()


class StreamIdle(LimitError):
    pass
