"""kill -9 of a real agent in the middle of a push and of a benchmark, then a restart on the same store:
published artifacts intact (each hashes to its name), the cut upload resumes with only its missing bytes,
and no worker process is left behind."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import pytest

from host.client import AgentClient, AgentError
from protos import edge_agent_pb2 as pb
from tests.test_agent_limits import _alive, _wait
from tests.test_worker_faults import children


def _published_ok(store) -> set[str]:
    names = set()
    for d in (store / "objects").iterdir():
        if not d.name.startswith("."):
            assert hashlib.sha256((d / "data").read_bytes()).hexdigest() == d.name
            names.add(d.name)
    return names


@pytest.mark.parametrize("when", ["push", "benchmark"])
def test_kill9_then_restart_keeps_the_store_and_leaves_no_orphans(agent_factory, tflite_model, tmp_path, when):
    store = tmp_path / "kstore"
    a = agent_factory(store)
    model_sha = hashlib.sha256(tflite_model.read_bytes()).hexdigest()
    payload = b"\x1c\x00\x00\x00TFL3" + os.urandom(6 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    big = tmp_path / "big.tflite"
    big.write_bytes(payload)
    worker = None
    with AgentClient(a.address) as c:
        c.push(tflite_model, model_sha, "tflite")
        if when == "push":
            half = threading.Event()

            def slow():
                yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=digest, size=len(payload),
                                                                file_name=big.name, format="tflite"))
                for i in range(0, len(payload), 1 << 20):
                    if i >= len(payload) // 2:
                        half.set()
                        time.sleep(0.5)
                    yield pb.ArtifactChunk(data=payload[i:i + (1 << 20)])

            fut = c.stub.PushArtifact.future(slow(), timeout=60)
            assert half.wait(20)
            time.sleep(0.2)
        else:
            def run():
                try:
                    c.benchmark(model_sha, c.run_options(runs=10**5, min_seconds=30, max_seconds=30, target_ci=0),
                                timeout=60)
                except AgentError:
                    pass

            threading.Thread(target=run, daemon=True).start()
            assert _wait(lambda: children(a.proc.pid), 20)
            worker = children(a.proc.pid)[0]
            time.sleep(1.0)
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        if when == "push":
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - the link died with the agent
                pass
    if worker:
        assert _wait(lambda: not _alive(worker), 5), "an orphan worker survived the agent"
    b = agent_factory(store)
    assert model_sha in _published_ok(store)
    with AgentClient(b.address) as c:
        assert c.stat(model_sha)["exists"]
        if when == "push":
            held = c.stat(digest)["bytes_held"]
            assert 0 < held < len(payload)
            r = c.push(big, digest, "tflite")
            assert r["sent"] == len(payload) - held and c.stat(digest)["exists"]
        res = c.benchmark(model_sha, c.run_options(runs=5, min_seconds=0, max_seconds=2, target_ci=0))
        assert res["summary"]["runs"] >= 5
    assert digest in _published_ok(store) or when == "benchmark"
