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
