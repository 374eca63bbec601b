"""A real agent on a shared device: bad requests refused up front, stalled clients cannot hold the device or
its handler threads, the worker dies with its agent and runs under resource limits."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from agent.tensors import to_proto
from host.client import AgentClient, AgentError
from protos import edge_agent_pb2 as pb
from tests.test_worker_faults import children


def push(c: AgentClient, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    c.push(path, digest, "tflite")
    return digest


@pytest.mark.parametrize("opts, words", [
    ({"max_seconds": float("nan")}, "max_seconds must be a finite number"),
    ({"threads": -2}, "threads must be >= 0"),
    ({"runs": 2**31 - 1}, "exceeds this agent's cap"),
    ({"max_seconds": 1e9}, "--max-run-seconds"),
    ({"warmup_seconds": -1.0}, "warmup_seconds must be >= 0"),
    ({"distinct_inputs": 10**6}, "--max-distinct-inputs"),
    ({"target_ci": float("inf")}, "target_ci must be a finite number"),
])
def test_bad_run_options_refused_up_front(agent, tflite_model, opts, words):
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        t0 = time.monotonic()
        with pytest.raises(AgentError) as ei:
            c.benchmark(digest, c.run_options(**opts))
        assert time.monotonic() - t0 < 3           # before a worker is started or the device taken
        assert ei.value.code == "bad-input" and words in str(ei.value) and "\n" not in str(ei.value)
        assert children(agent.proc.pid) == []


def _stalled_infer(c: AgentClient, digest: str, release: threading.Event) -> tuple[list, threading.Thread]:
    """An Infer stream that sends its first request (with inputs) and then nothing until released."""
    got: list = []

    def requests():
        feed = np.zeros((1, 32, 32, 3), np.float32)
        yield pb.InferRequest(sha256=digest, id=1, inputs=[to_proto("serving_default_input_1:0", feed)])
        release.wait(60)

    def drain():
        try:
            for r in c.stub.Infer(requests(), timeout=60):
                got.append(r)
        except grpc.RpcError as e:
            got.append(e)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return got, t


def test_idle_infer_releases_the_device_and_a_waiter_is_told_who_holds_it(agent_factory, tflite_model):
    a = agent_factory(args=("--infer-idle-s", "4", "--lock-wait-s", "1"))
    release = threading.Event()
    with AgentClient(a.address) as c:
        digest = push(c, tflite_model)
        got, t = _stalled_infer(c, digest, release)
        for _ in range(100):                     # the stalled stream holds the device once its model is loaded
            if got:
                break
            time.sleep(0.1)
        opts = c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0)
        with pytest.raises(AgentError) as ei:
            c.benchmark(digest, opts)
        msg = str(ei.value)
        assert ei.value.code == "busy" and "held by Infer of " + digest[:12] in msg and "since" in msg, msg
        t.join(15)                               # the idle timeout ends the stalled stream with a clear error
        assert not t.is_alive()
        errors = [r for r in got if isinstance(r, pb.InferResponse) and r.error.code]
        assert errors and errors[0].error.code == "idle" and "--infer-idle-s" in errors[0].error.message
        assert c.benchmark(digest, opts)["summary"]["runs"] >= 5    # the device is free again
    release.set()


def test_stalled_streams_cannot_take_every_handler_thread(agent_factory):
    a = agent_factory(args=("--max-streams", "6"))
    release = threading.Event()
    calls = []
    with AgentClient(a.address) as c:
        def stalled():
            yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256="ab" * 32, size=1000, file_name="x.tflite",
                                                            format="tflite"))
            release.wait(60)

        for _ in range(10):                      # more stalled uploads than the old pool had threads (8)
            calls.append(c.stub.PushArtifact.future(stalled(), timeout=60))
        time.sleep(1.0)
        refused = [f for f in calls if f.done() and f.exception() is not None]
        assert len(refused) == 4                 # beyond --max-streams: refused at once, not queued
        assert all(f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for f in refused)
        t0 = time.monotonic()
        for _ in range(20):
            assert c.info()["agent_version"]
        assert (time.monotonic() - t0) / 20 < 0.5
        release.set()
        for f in calls:
            try:
                f.result(10)
            except grpc.RpcError:
                pass


def test_stalled_upload_is_cut_and_resumable(agent_factory, tmp_path):
    a = agent_factory(args=("--push-idle-s", "1"))
    payload = b"\x00\x00\x00\x00TFL3" + bytes(range(256)) * 4000
    digest = hashlib.sha256(payload).hexdigest()
    release = threading.Event()

    def stalled():
        yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=digest, size=len(payload), file_name="m.tflite",
                                                        format="tflite"))
        yield pb.ArtifactChunk(data=payload[:5000])
        release.wait(30)

    with AgentClient(a.address) as c:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.PushArtifact(stalled(), timeout=30)
        release.set()
        assert time.monotonic() - t0 < 10
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "stalled" in ei.value.details()
        assert c.stat(digest)["bytes_held"] == 5000
        f = tmp_path / "m.tflite"
        f.write_bytes(payload)
        assert c.push(f, digest, "tflite")["sent"] == len(payload) - 5000


def test_negative_offset_is_invalid_argument(agent):
    with AgentClient(agent.address) as c:
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.PushArtifact(iter([pb.ArtifactChunk(header=pb.ArtifactHeader(
                sha256="ab" * 32, size=100, file_name="x.tflite", format="tflite", offset=-1))]))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "negative" in ei.value.details()


def test_warmup_samples_stream_in_bounded_batches(agent, tflite_model):
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        batches: list[tuple[str, int]] = []
        res = c.benchmark(digest, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0, warmup_runs=0,
                                                warmup_seconds=1.0, sample_batch=20),
                          on_event=lambda k, e: batches.append((e.phase, len(e.latency_ms))) if k == "samples" else 0)
    warm = [n for phase, n in batches if phase == "warmup"]
    assert len(res["warmup_samples"]) > 40 and len(warm) >= 2 and max(warm) <= 20
    assert sum(warm) == res["summary"]["warmup_runs"]


def test_an_error_inside_an_infer_stream_is_reported_and_later_requests_run(agent, tflite_model):
    good = np.zeros((1, 32, 32, 3), np.float32)
    name = "serving_default_input_1:0"
    with AgentClient(agent.address) as c:
        digest = push(c, tflite_model)
        name = next(iter(c.benchmark(digest, c.run_options(runs=1, min_seconds=0, max_seconds=1, target_ci=0))
                         ["started"]["inputs"]))["name"]

        def requests():
            yield pb.InferRequest(sha256=digest)
            yield pb.InferRequest(id=1, inputs=[to_proto(name, good)])
            bad = pb.Tensor(name=name, dtype="float32", shape=[1, 32, 32, 3], data=b"\x00" * 7)
            yield pb.InferRequest(id=2, inputs=[bad])
            yield pb.InferRequest(id=3, inputs=[to_proto(name, good)])

        out = list(c.stub.Infer(requests(), timeout=60))
    assert [r.id for r in out] == [1, 2, 3]
    assert not out[0].error.code and out[1].error.code == "bad-input" and "bytes do not match" in out[1].error.message
    assert not out[2].error.code and out[2].outputs


def test_message_cap_refuses_and_keeps_serving(agent_factory, tflite_model):
    a = agent_factory(args=("--max-message-mb", "1"))
    with AgentClient(a.address) as c:
        digest = push(c, tflite_model)          # 1 MiB chunks plus framing would not fit: the client sends less
        big = pb.InferRequest(sha256=digest, inputs=[pb.Tensor(name="x", dtype="uint8", shape=[2 << 20],
                                                               data=b"\x00" * (2 << 20))])
        with pytest.raises(grpc.RpcError) as ei:
            list(c.stub.Infer(iter([big]), timeout=30))
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.info()["agent_version"]


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_long_benchmark(c: AgentClient, digest: str) -> threading.Thread:
    def run():
        try:
            c.benchmark(digest, c.run_options(runs=10**5, min_seconds=30, max_seconds=30, target_ci=0,
                                              warmup_seconds=20), timeout=60)
        except AgentError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_worker_dies_with_its_agent_and_runs_under_limits(agent_factory, tflite_model):
    a = agent_factory(args=("--worker-cpu-s", "900", "--worker-fsize-mb", "64", "--worker-mem-mb", "8192"))
    with AgentClient(a.address) as c:
        digest = push(c, tflite_model)
        _start_long_benchmark(c, digest)
        assert _wait(lambda: children(a.proc.pid), 20)
        worker = children(a.proc.pid)[0]
        time.sleep(1.5)                        # the worker sets its limits first thing, then loads; now warming up
        limits = Path(f"/proc/{worker}/limits").read_text()
        row = {ln[:26].strip(): ln[26:].split() for ln in limits.splitlines()[1:]}
        assert row["Max cpu time"][0] == "900"
        assert row["Max file size"][0] == str(64 << 20)
        assert row["Max address space"][0] == str(8192 << 20)
        os.kill(a.proc.pid, signal.SIGKILL)    # the agent dies without a word
        assert _wait(lambda: not _alive(worker), 5), "the worker outlived its agent"


def test_worker_cpu_limit_ends_the_run_with_a_clear_error(agent_factory, tflite_model):
    a = agent_factory(args=("--worker-cpu-s", "2",))
    with AgentClient(a.address) as c:
        digest = push(c, tflite_model)
        with pytest.raises(AgentError) as ei:
            c.benchmark(digest, c.run_options(runs=10**5, min_seconds=20, max_seconds=20, target_ci=0), timeout=60)
        assert ei.value.code == "worker-crashed" and "CPU-time limit" in str(ei.value)
        assert c.info()["agent_version"]
