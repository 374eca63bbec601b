"""Runs one artifact's Runner in a child process, so a model that crashes or hangs the runtime never
takes the agent down.

The parent (`Worker`) talks to the child over a private socketpair with multiprocessing's
Connection (pickled tuples, numpy arrays included); the runtime's own stdout/stderr noise cannot
corrupt that channel. Every request has a deadline: past it the child is killed and the caller
gets a `RunnerError("timeout", ...)`; a child that dies gives `RunnerError("worker-crashed", ...)`
naming the signal.

Child protocol: ("load", path, fmt, runtime, options) -> ("ok", info)
                ("bench", config, feeds|None, seed, distinct) -> ("event", kind, payload)* ("ok", summary)
                    (summary["describe_after"]: the runner's describe() once the run is over)
                ("infer", feed) -> ("ok", outputs, ms)
                ("profile", feeds|None, seed, runs) -> ("ok", profile)   (agent/profile_run.py)
                ("close",)
                any failure -> ("error", code, message)

The child dies with the agent: PR_SET_PDEATHSIG (Linux) plus a watchdog thread that exits when its
parent pid changes (other systems, and the window before prctl). It runs under resource limits
(address space, CPU seconds, file size) so a hostile or broken model cannot take the device down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Iterator, Optional

from agent.runtimes.base import RunnerError


@dataclass
class WorkerLimits:
    """setrlimit values for the worker; 0 = not limited."""
    address_space_mb: int = 0
    cpu_seconds: int = 0
    file_size_mb: int = 0

    def argv(self) -> list[str]:
        return [str(self.address_space_mb), str(self.cpu_seconds), str(self.file_size_mb)]


def parse_cpu_list(spec: str, available: Optional[set[int]] = None) -> set[int]:
    """CPUs from a Linux cpu-list ("2,3", "4-7", "0,2-3"); RunnerError("bad-input") for a bad spec or for CPUs
    outside `available` (default: those this process may run on), so a typo in a target file is one clear line."""
    cpus: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            a = b = -1
        if a < 0 or b < a or b > 65535:  # the cap keeps a typo like 0-99999999 from building a huge set
            raise RunnerError("bad-input", f"bad cpu affinity {spec!r}: {part!r} is not a CPU number or a range "
                                           "like 4-7 (expected e.g. '2,3', '4-7' or '0,2-3')")
        cpus.update(range(a, b + 1))
    if not cpus:
        raise RunnerError("bad-input", f"bad cpu affinity {spec!r}: it names no CPUs")
    if available is None:
        available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    missing = cpus - available
    if missing:
        raise RunnerError("bad-input", f"cpu affinity {spec!r} names CPUs {_cpu_ranges(missing)} that this device "
                                       f"does not offer (available: {_cpu_ranges(available)})")
    return cpus


def _cpu_ranges(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5", the same notation the user writes."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            name = f"signal {-rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return f"signal {-rc}"
        if -rc == signal.SIGXCPU:
            name += ": the worker's CPU-time limit was reached (agent serve --worker-cpu-s)"
        elif -rc == signal.SIGXFSZ:
            name += ": the worker's file-size limit was reached (agent serve --worker-fsize-mb)"
        return name
    return f"exit code {rc}"


class Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, cpu_affinity: str = "", env: Optional[dict[str, str]] = None,
                 limits: Optional[WorkerLimits] = None):
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "agent.worker", str(child.fileno()), str(os.getpid()),
               *(limits or WorkerLimits()).argv()]
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


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """A dict that json.dumps takes (numpy scalars, paths and the like become str)."""
    return json.loads(json.dumps(d, default=str))


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Exit when the agent does. PR_SET_PDEATHSIG fires when the thread that forked us exits; the agent's
    handler threads live as long as the agent, so in practice that is the agent's death. The watchdog
    covers systems without prctl and the window before it was set (the parent already gone)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _apply_limits(lim: WorkerLimits) -> None:
    import resource

    for res, value in ((resource.RLIMIT_AS, lim.address_space_mb << 20), (resource.RLIMIT_CPU, lim.cpu_seconds),
                       (resource.RLIMIT_FSIZE, lim.file_size_mb << 20)):
        if value > 0:
            _, hard = resource.getrlimit(res)
            soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
            # CPU: the soft limit sends SIGXCPU (a clear exit); the hard one a second later SIGKILLs a handler
            hard_new = soft + 1 if res == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(res, (soft, hard_new if res == resource.RLIMIT_CPU else hard))


def _child(fd: int) -> None:
    import numpy as np

    from agent import bench, probes
    from agent import runtimes as registry
    from agent.runtimes.base import RunnerOptions, manifest_shapes, random_inputs

    conn = Connection(fd)
    runner = None
    threads = 0
    info: dict[str, Any] = {}
    known_shapes: dict[str, list[int]] = {}

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
                    os.sched_setaffinity(0, parse_cpu_list(affinity))
                env_before = probes.snapshot()
                entry = registry.choose(fmt, runtime or None, tuple(options.get("prefer", ())))
                runner = registry.create(entry)
                import_ms = registry.preload(entry)
                t0 = time.perf_counter()
                threads = int(options.get("threads") or 0)
                runner.load(path, RunnerOptions(**{k: v for k, v in options.items() if k != "prefer"}))
                load_ms = (time.perf_counter() - t0) * 1e3
                peak_load = _peak_rss_mb()
                info = {"runtime": entry.name, "describe": runner.describe(), "load_ms": load_ms, "import_ms": import_ms,
                        "peak_rss_load_mb": peak_load, "env_before": env_before,
                        "inputs": [s.__dict__ for s in runner.input_specs()],
                        "outputs": [s.__dict__ for s in runner.output_specs()]}
                known_shapes = manifest_shapes(options.get("manifest") or {})
                send("ok", info)
            elif op == "bench":
                _, config, feeds, seed, distinct = msg
                assert runner is not None, "load first"
                kind = "user" if feeds else f"random(seed={seed})"
                if not feeds:   # dynamic dims take the shape the host recorded in the manifest
                    feeds = random_inputs(runner.input_specs(), distinct or 4, seed, known_shapes)
                # what was fed, as the device saw it: a latency means nothing without its input's shape
                fed = {"kind": kind, "shapes": {k: [int(d) for d in np.shape(v)] for k, v in feeds[0].items()},
                       "dtypes": {k: str(np.asarray(v).dtype) for k, v in feeds[0].items()}}
                cfg = bench.BenchConfig.from_options(config)
                _reset_peak_rss()
                summary = bench.run_protocol(runner.infer, feeds, cfg, lambda k, p: send("event", k, p))
                summary["peak_rss_mb"] = _peak_rss_mb()
                summary["peak_rss_load_mb"] = info.get("peak_rss_load_mb", 0.0)
                env_after = probes.snapshot()
                summary["env_after"] = env_after
                summary["flags"] = bench.flags_for(summary, cfg, probes.compare(info.get("env_before", {}), env_after,
                                                                         own_threads=max(1, threads)))
                # describe() again: what a runner learns while running (TensorRT's H2D / compute / D2H
                # split) does not exist yet at load time
                summary["describe_after"] = _jsonable(runner.describe()) | {"fed_inputs": fed}
                send("ok", summary)
            elif op == "profile":  # after the measurement, never during it (agent/profile_run.py)
                from agent.profile_run import child_profile

                assert runner is not None, "load first"
                send("ok", child_profile(runner, msg[1], msg[2], msg[3]))
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
    _die_with_parent(int(sys.argv[2]) if len(sys.argv) > 2 else os.getppid())
    if len(sys.argv) > 5:
        _apply_limits(WorkerLimits(*(int(x) for x in sys.argv[3:6])))
    _child(int(sys.argv[1]))
