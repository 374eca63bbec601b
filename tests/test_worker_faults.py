"""A model that crashes or hangs the runtime never takes the agent down (real processes, real signals)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from host.client import AgentClient, AgentError


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def push(c: AgentClient, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    c.push(path, digest, "tflite")
    return digest


def _signal_worker_during_benchmark(agent, c, digest, sig, **opts):
    errors: list[Exception] = []

    def run():
        try:
            c.benchmark(digest, c.run_options(runs=10**6, min_seconds=30, max_seconds=30, target_ci=0, **opts))
        except AgentError as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    worker = None
    for _ in range(200):
        kids = children(agent.proc.pid)
        if kids:
            worker = kids[0]
            break
        time.sleep(0.05)
    assert worker, "no worker process appeared"
    time.sleep(1.0)  # let it load and enter the steady state
    os.kill(worker, sig)
    t.join(60)
    assert not t.is_alive()
    return errors


def test_crashing_worker_reports_and_agent_keeps_serving(agent, tflite_model):
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        errors = _signal_worker_during_benchmark(agent, c, digest, signal.SIGSEGV)
        assert errors and errors[0].code == "worker-crashed" and "SIGSEGV" in str(errors[0])
        ok = c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0))
        assert ok["summary"]["runs"] >= 5
        assert c.info()["agent_version"]


def test_hanging_worker_hits_deadline(agent, tflite_model):
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        errors = _signal_worker_during_benchmark(agent, c, digest, signal.SIGSTOP, deadline_s=4)
        assert errors and errors[0].code == "timeout" and "did not finish in time" in str(errors[0])
        ok = c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0))
        assert ok["summary"]["runs"] >= 5


def test_corrupt_model_gives_load_error_then_serving(agent, tflite_model, tmp_path):
    good = tflite_model.read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(good[:8] + bytes(len(good) - 8))  # valid identifier, garbage body
    with AgentClient(agent.address) as c:
        bad_digest = push(c, broken)
        with pytest.raises(AgentError) as ei:
            c.benchmark(bad_digest, c.run_options(runs=5, min_seconds=0, max_seconds=2))
        assert ei.value.code in ("load-failed", "worker-crashed")
        digest = push(c, tflite_model)
        assert c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0))["summary"]["runs"] >= 5


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # killed, not yet reaped
            return True
        time.sleep(0.05)
    return False


def test_client_cancel_during_load_kills_the_worker(agent, tflite_model):
    from protos import edge_agent_pb2 as pb

    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        call = c.stub.Benchmark(pb.BenchmarkRequest(sha256=digest, options=c.run_options(runs=5, target_ci=0)))
        events: list[str] = []

        def drain():
            try:
                for ev in call:
                    events.append(ev.WhichOneof("event"))
            except Exception:  # noqa: BLE001 - the cancel ends the stream with an error
                pass

        t = threading.Thread(target=drain)
        t.start()
        worker = None
        for _ in range(2000):
            kids = children(agent.proc.pid)
            if kids:
                worker = kids[0]
                break
            time.sleep(0.005)
        assert worker, "no worker process appeared"
        os.kill(worker, signal.SIGSTOP)  # the load now "hangs" like a long TensorRT engine build
        time.sleep(1.0)
        if events:
            os.kill(worker, signal.SIGCONT)
            call.cancel()
            t.join(30)
            pytest.skip("the worker finished loading before it could be stopped")
        call.cancel()
        t.join(30)
        assert _wait_gone(worker, 30), "a cancelled load left its worker holding the device"
        # the device lock is free again: a new benchmark runs at once
        ok = c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0), timeout=60)
        assert ok["summary"]["runs"] >= 5


def test_cpu_affinity_ranges_and_bad_specs(agent, tflite_model):
    cpus = sorted(os.sched_getaffinity(0))
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        spec = f"{cpus[0]}-{cpus[0]}" + (f",{cpus[-1]}" if len(cpus) > 1 else "")
        ok = c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0,
                                               runtime_options={"affinity": spec}))
        assert ok["summary"]["runs"] >= 5
        for bad, words in (("4-x", "bad cpu affinity"), (f"0-{cpus[-1] + 64}", "does not offer")):
            with pytest.raises(AgentError) as ei:
                c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0,
                                                  runtime_options={"affinity": bad}))
            assert ei.value.code == "bad-input" and words in str(ei.value) and "\n" not in str(ei.value)


def test_parse_cpu_list():
    from agent.runtimes.base import RunnerError
    from agent.worker import parse_cpu_list

    eight = set(range(8))
    assert parse_cpu_list("4-7", eight) == {4, 5, 6, 7}
    assert parse_cpu_list("0,2-3", eight) == {0, 2, 3}
    assert parse_cpu_list(" 2, 3 ", eight) == {2, 3}
    for bad in ("", "x", "3-1", "-1", "1-", "1-2-3", "0-4-"):
        with pytest.raises(RunnerError) as ei:
            parse_cpu_list(bad, eight)
        assert ei.value.code == "bad-input"
    with pytest.raises(RunnerError, match=r"names CPUs 8-9 .*available: 0-7"):
        parse_cpu_list("6-9", eight)
