"""The skeleton end to end over real gRPC: a real agent process, a real .tflite, real LiteRT."""

from __future__ import annotations

import hashlib
import threading

import grpc
import pytest

from host.client import AgentClient, AgentError
from protos import edge_agent_pb2 as pb


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_push_and_benchmark_real_tflite(agent, tflite_model):
    data = tflite_model.read_bytes()
    with AgentClient(agent.address) as c:
        info = c.info()
        assert info["agent_version"]
        litert = [r for r in info["runtimes"] if r["name"] == "litert"][0]
        assert litert["available"] and litert["version"]
        first = c.push(tflite_model, sha(data), "tflite")
        assert first == {"sent": len(data), "skipped": 0, "already_present": False}
        again = c.push(tflite_model, sha(data), "tflite")
        assert again["sent"] == 0 and again["already_present"]
        events = []
        res = c.benchmark(sha(data), c.run_options(runs=30, min_seconds=0.2, max_seconds=5, target_ci=0),
                          on_event=lambda k, e: events.append(k))
    s = res["summary"]
    assert s["runs"] >= 30 and len(res["samples"]) == s["runs"]
    assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["ci_lo"] <= s["p50"] <= s["ci_hi"]
    assert s["load_ms"] > 0 and s["first_ms"] > 0 and s["peak_rss_mb"] > 10
    assert res["started"]["runtime"] == "litert"
    assert events[0] == "started" and events[-1] == "summary" and "samples" in events


def test_zero_options_reach_the_agent_as_values(agent, tflite_model):
    # proto3 `optional`: a 0 is sent and kept ("no warm-up", "no minimum duration", "target_ci off")
    opts = AgentClient.run_options(runs=5, min_seconds=0, max_seconds=5, warmup_runs=0, warmup_seconds=0, target_ci=0)
    assert all(opts.HasField(f) for f in ("runs", "min_seconds", "warmup_runs", "warmup_seconds", "target_ci"))
    assert not AgentClient.run_options(runs=5).HasField("target_ci")  # unset: the agent's default applies
    data = tflite_model.read_bytes()
    with AgentClient(agent.address) as c:
        c.push(tflite_model, sha(data), "tflite")
        res = c.benchmark(sha(data), opts)
    s = res["summary"]
    assert s["stop_reason"] == "runs-and-min-seconds" and s["runs"] == 5
    assert s["warmup_runs"] == 0 and res["warmup_samples"] == []
    # the runner's describe() after the run travels in the summary
    assert s["describe_after"]["runtime"] == "litert"
    # importing the runtime is timed apart from the model's load
    assert res["started"]["import_ms"] > 0 and res["started"]["load_ms"] > 0


def test_cut_upload_resumes_with_only_missing_bytes(agent, tmp_path):
    payload = b"\x00\x00\x00\x00TFL3" + bytes(range(256)) * 20000  # ~5 MiB, passes the format sniff
    f = tmp_path / "big.tflite"
    f.write_bytes(payload)
    digest = sha(payload)
    half_sent = threading.Event()
    release = threading.Event()

    def cut_stream():
        yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=digest, size=len(payload), file_name=f.name,
                                                        format="tflite"))
        for i in range(0, len(payload) // 2, 1 << 20):
            yield pb.ArtifactChunk(data=payload[i:i + (1 << 20)])
        half_sent.set()
        release.wait(10)  # the link "hangs" here until the client cancels

    with AgentClient(agent.address) as c:
        fut = c.stub.PushArtifact.future(cut_stream())
        assert half_sent.wait(10)
        import time

        held = 0
        for _ in range(100):  # wait until the agent has written what arrived
            held = c.stat(digest)["bytes_held"]
            if held >= (len(payload) // 2) // (1 << 20) * (1 << 20):
                break
            time.sleep(0.05)
        fut.cancel()
        release.set()
        for _ in range(100):
            st = c.stat(digest)
            if st["bytes_held"] == held:
                break
            time.sleep(0.05)
        assert not st["exists"] and st["bytes_held"] > 0
        r = c.push(f, digest, "tflite")
        assert r["sent"] == len(payload) - st["bytes_held"]
        assert c.stat(digest)["exists"]


def test_corrupt_upload_rejected_and_store_intact(agent, tflite_model, tmp_path):
    good = tflite_model.read_bytes()
    with AgentClient(agent.address) as c:
        c.push(tflite_model, sha(good), "tflite")
        before = c.list()
        bad = tmp_path / "bad.tflite"
        bad.write_bytes(good[:-10] + b"0123456789")  # bytes that do not hash to the claimed digest
        with pytest.raises(AgentError, match="sha256 mismatch"):
            c.push(bad, sha(good[:-1] + b"x"), "tflite", retries=0)
        assert c.list() == before
        # a file that is not a model is refused with a clear message
        txt = tmp_path / "notes.tflite"
        txt.write_bytes(b"hello, this is not a model at all")
        with pytest.raises(AgentError, match="not a TFLite flatbuffer"):
            c.push(txt, sha(txt.read_bytes()), "tflite", retries=0)
        assert c.list() == before
        res = c.benchmark(sha(good), c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0))
        assert res["summary"]["runs"] >= 5


def test_restart_keeps_published_artifacts(agent_factory, tflite_model, tmp_path):
    data = tflite_model.read_bytes()
    a = agent_factory(tmp_path / "persist")
    with AgentClient(a.address) as c:
        c.push(tflite_model, sha(data), "tflite")
    a.stop()
    b = agent_factory(tmp_path / "persist")
    with AgentClient(b.address) as c:
        assert c.stat(sha(data))["exists"]
        assert c.push(tflite_model, sha(data), "tflite")["sent"] == 0


def test_unknown_artifact_and_unreachable_agent_are_clear(agent):
    with AgentClient(agent.address) as c:
        with pytest.raises(AgentError, match="not on this device"):
            c.benchmark("a" * 64, c.run_options(runs=1))
    from tests.conftest import free_port

    with AgentClient(f"127.0.0.1:{free_port()}", timeout=2) as c:
        with pytest.raises(AgentError, match="unreachable"):
            c.info()


def test_grpc_status_for_bad_sha(agent):
    with AgentClient(agent.address) as c:
        with pytest.raises(grpc.RpcError) as ei:
            c.stub.StatArtifact(pb.ArtifactQuery(sha256="nothex"))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_load_is_tied_to_the_call_and_gets_the_clients_deadline(tmp_path, tflite_model, monkeypatch):
    # in-process, with a stand-in Worker: which deadline the load gets, and that a cancel already reaches it
    from agent import server
    from agent.store import ArtifactStore, Header

    data = tflite_model.read_bytes()
    store = ArtifactStore(tmp_path / "store")
    store.receive(Header(sha256=sha(data), size=len(data), file_name="m.tflite", format="tflite", offset=0,
                         manifest_json=""), iter([data]))
    seen: list[tuple[float, bool]] = []

    class Context:
        def __init__(self):
            self.callbacks = []

        def add_callback(self, cb):
            self.callbacks.append(cb)
            return True

    class FakeWorker:
        def __init__(self, cpu_affinity="", limits=None):
            self.killed = False

        def kill(self):
            self.killed = True

        def load(self, path, fmt, runtime, options, timeout):
            # a client that goes away now (e.g. during a TensorRT engine build) must already stop this worker
            seen.append((timeout, self.kill in ctx.callbacks))
            return {}

        def close(self):
            pass

    monkeypatch.setattr(server, "Worker", FakeWorker)
    svc = server.AgentServicer(store)
    for deadline, want in ((1800.0, 1800.0), (0.0, 600.0)):
        ctx = Context()
        svc._open_worker(sha(data), pb.RunOptions(deadline_s=deadline), ctx)
        assert seen[-1] == (want, True)
