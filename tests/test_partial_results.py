"""A link that drops mid-benchmark loses nothing that already arrived: the host keeps the streamed
samples, computes the statistics from them and flags the result as incomplete."""

from __future__ import annotations

import hashlib
import os
import signal

import pytest

from host.client import AgentClient, AgentError


def test_agent_killed_mid_run_keeps_the_samples_that_arrived(agent, tflite_model):
    data = tflite_model.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    batches = []

    def on_event(kind, ev):
        if kind == "samples" and ev.phase == "steady":
            batches.append(len(ev.latency_ms))
            if len(batches) == 3:  # the device goes away mid-run (power cut, cable, crash)
                os.killpg(agent.proc.pid, signal.SIGKILL)

    with AgentClient(agent.address) as c:
        c.push(tflite_model, digest, "tflite")
        res = c.benchmark(digest, c.run_options(runs=100000, min_seconds=30, max_seconds=60, target_ci=0,
                                                sample_batch=20), on_event=on_event, timeout=60)
    s = res["summary"]
    assert res["incomplete"] and s["stop_reason"] == "link-lost"
    assert s["runs"] == len(res["samples"]) >= sum(batches[:3]) == 60
    assert 0 < s["min"] <= s["p50"] <= s["p99"] <= s["max"] and s["ci_lo"] <= s["p50"] <= s["ci_hi"]
    assert any(f.startswith("incomplete(link lost") for f in s["flags"])


def test_link_lost_before_any_sample_is_an_error(agent, tflite_model):
    data = tflite_model.read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    def on_event(kind, ev):
        if kind == "started":
            os.killpg(agent.proc.pid, signal.SIGKILL)

    with AgentClient(agent.address) as c:
        c.push(tflite_model, digest, "tflite")
        with pytest.raises(AgentError):
            c.benchmark(digest, c.run_options(runs=50, min_seconds=5, max_seconds=10, sample_batch=1000),
                        on_event=on_event, timeout=30)
