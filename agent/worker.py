"""Runs one artifact's Runner in a child process, so a model that crashes or hangs the runtime never
takes the agent down.

The parent (`Worker`) talks to the child over a private socketpair with multiprocessing's
Connection (pickled tuples, numpy arrays included); the runtime's own stdout/stderr noise cannot
corrupt that channel. Every request has a deadline: past it the child is killed and the caller
gets a `RunnerError("timeout", ...)`; a child that dies gives `RunnerError("worker-crashed", ...)`
naming the signal.

Child protocol: ("load", path, fmt, runtime, options) -> ("ok", info)
                ("bench", config, feeds|None, seed, distinct) -> ("event", kind, payload)* ("ok", summary)
                ("infer", feed) -> ("ok", outputs, ms)
                ("close",)
                any failure -> ("error", code, message)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Iterator, Optional

from agent.runtimes.base import RunnerError


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {-rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


class Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, cpu_affinity: str = "", env: Optional[dict[str, str]] = None):
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "agent.worker", str(child.fileno())]
        self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        child.close()
        self.conn = Connection(parent.detach())
        self.cpu_affinity = cpu_affinity

    # -- transport ----------------------------------------------------------------------------
    def _recv(self, deadline: float, what: str) -> tuple:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RunnerError("timeout", f"{what} did not finish in time; the worker was stopped "
                                             "(raise the deadline with --timeout if the model is slow)")
            try:
                if self.conn.poll(min(remaining, 0.5)):
                    return self.conn.recv()
            except (EOFError, OSError, ConnectionError):
                pass
            rc = self.proc.poll()
            if rc is not None:
                raise RunnerError("worker-crashed", f"the runtime crashed during {what} ({_signal_name(rc)}); "
                                                    "the agent is still serving")

    def _send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, BrokenPipeError) as e:
            rc = self.proc.poll()
            raise RunnerError("worker-crashed", f"the runtime worker is gone ({_signal_name(rc or 0)})") from e

    def _reply(self, deadline: float, what: str) -> tuple:
        msg = self._recv(deadline, what)
        if msg[0] == "error":
            raise RunnerError(msg[1], msg[2])
        return msg

    # -- requests -----------------------------------------------------------------------------
    def load(self, path: str, fmt: str, runtime: str, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._send(("load", path, fmt, runtime, options, self.cpu_affinity))
        return self._reply(time.monotonic() + timeout, "model load")[1]

    def bench(self, config: dict[str, Any], feeds: Optional[list[dict]], seed: int, distinct: int,
              timeout: float) -> Iterator[tuple[str, dict]]:
        """Yields ("event", kind, payload) tuples as they arrive, then ("summary", summary)."""
        self._send(("bench", config, feeds, seed, distinct))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._reply(deadline, "the benchmark")
            if msg[0] == "event":
                yield msg[1], msg[2]
            else:
                yield "summary", msg[1]
                return

    def infer(self, feed: dict, timeout: float) -> tuple[dict, float]:
        self._send(("infer", feed))
        msg = self._reply(time.monotonic() + timeout, "inference")
        return msg[1], msg[2]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.conn.send(("close",))
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# child side

def _peak_rss_mb() -> float:
    """Peak resident set since start (or since the last reset) from /proc, else getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM, so inference peak is measured apart from load."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(fd: int) -> None:
    from agent import bench, probes
    from agent import runtimes as registry
    from agent.runtimes.base import RunnerOptions, random_inputs

    conn = Connection(fd)
    runner = None
    threads = 0
    info: dict[str, Any] = {}

    def send(*msg: Any) -> None:
        conn.send(msg)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        try:
            if op == "close":
                if runner:
                    runner.close()
                return
            if op == "load":
                _, path, fmt, runtime, options, affinity = msg
                if affinity:
                    os.sched_setaffinity(0, {int(c) for c in affinity.split(",") if c.strip()})
                env_before = probes.snapshot()
                entry = registry.choose(fmt, runtime or None, tuple(options.get("prefer", ())))
                runner = registry.create(entry)
                t0 = time.perf_counter()
                threads = int(options.get("threads") or 0)
                runner.load(path, RunnerOptions(**{k: v for k, v in options.items() if k != "prefer"}))
                load_ms = (time.perf_counter() - t0) * 1e3
                peak_load = _peak_rss_mb()
                info = {"runtime": entry.name, "describe": runner.describe(), "load_ms": load_ms,
                        "peak_rss_load_mb": peak_load, "env_before": env_before,
                        "inputs": [s.__dict__ for s in runner.input_specs()],
                        "outputs": [s.__dict__ for s in runner.output_specs()]}
                send("ok", info)
            elif op == "bench":
                _, config, feeds, seed, distinct = msg
                assert runner is not None, "load first"
                if not feeds:
                    feeds = random_inputs(runner.input_specs(), distinct or 4, seed)
                cfg = bench.BenchConfig.from_options(config)
                _reset_peak_rss()
                summary = bench.run_protocol(runner.infer, feeds, cfg, lambda k, p: send("event", k, p))
                summary["peak_rss_mb"] = _peak_rss_mb()
                summary["peak_rss_load_mb"] = info.get("peak_rss_load_mb", 0.0)
                env_after = probes.snapshot()
                summary["env_after"] = env_after
                summary["flags"] = bench.flags_for(summary, cfg, probes.compare(info.get("env_before", {}), env_after,
                                                                         own_threads=max(1, threads)))
                send("ok", summary)
            elif op == "infer":
                assert runner is not None, "load first"
                t0 = time.perf_counter()
                out = runner.infer(msg[1])
                send("ok", out, (time.perf_counter() - t0) * 1e3)
            else:
                send("error", "bad-input", f"unknown worker op {op!r}")
        except RunnerError as e:
            send("error", e.code, e.message)
        except Exception as e:  # noqa: BLE001 - any runtime failure becomes one line for the user
            code = "load-failed" if op == "load" else ("bad-input" if op == "infer" else "run-failed")
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            send("error", code, f"{type(e).__name__}: {first}"[:500])


if __name__ == "__main__":
    _child(int(sys.argv[1]))
