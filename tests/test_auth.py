"""Every RPC needs the agent's secret (a real agent, real gRPC); the secret file is private; listening
beyond loopback needs TLS."""

from __future__ import annotations

import stat
import subprocess
import sys

import grpc
import pytest

from host.client import AgentClient, AgentError
from protos import edge_agent_pb2 as pb
from protos import edge_agent_pb2_grpc as pb_grpc
from tests.conftest import ROOT

SHA = "ab" * 32


def _all_rpcs(stub: pb_grpc.AgentStub) -> dict[str, object]:
    """Call every RPC once; the status code each ended with (None = it succeeded)."""
    chunk = pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=SHA, size=10, file_name="x.tflite", format="tflite"))
    calls = {
        "GetInfo": lambda: stub.GetInfo(pb.GetInfoRequest(), timeout=10),
        "PushArtifact": lambda: stub.PushArtifact(iter([chunk, pb.ArtifactChunk(data=b"0123456789")]), timeout=10),
        "StatArtifact": lambda: stub.StatArtifact(pb.ArtifactQuery(sha256=SHA), timeout=10),
        "ListArtifacts": lambda: stub.ListArtifacts(pb.ListArtifactsRequest(), timeout=10),
        "DeleteArtifact": lambda: stub.DeleteArtifact(pb.ArtifactQuery(sha256=SHA), timeout=10),
        "Benchmark": lambda: list(stub.Benchmark(pb.BenchmarkRequest(sha256=SHA), timeout=10)),
        "Infer": lambda: list(stub.Infer(iter([pb.InferRequest(sha256=SHA)]), timeout=10)),
    }
    out: dict[str, object] = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = None
        except grpc.RpcError as e:
            out[name] = e.code()
    return out


def test_every_rpc_refused_without_the_secret(agent):
    with grpc.insecure_channel(agent.address) as ch:
        codes = _all_rpcs(pb_grpc.AgentStub(ch))
    assert codes == {k: grpc.StatusCode.UNAUTHENTICATED for k in codes}, codes
    with AgentClient(agent.address, secret="not-the-secret-" * 3) as c:
        codes = _all_rpcs(c.stub)
        assert codes == {k: grpc.StatusCode.UNAUTHENTICATED for k in codes}, codes
        with pytest.raises(AgentError, match="not authenticated") as ei:
            c.info()
        assert ei.value.code == "unauthenticated"
    # nothing reached the store, and each refusal is in the agent's log with the caller
    assert list((agent.store / "partial").iterdir()) == []
    log = agent.log.read_text()
    assert "refused unauthenticated call /edgeagent.v1.Agent/PushArtifact from ipv4:127.0.0.1:" in log
    # with the secret (remembered for this address, as a transport does) the same calls are served
    with AgentClient(agent.address) as c:
        codes = _all_rpcs(c.stub)
    assert codes["GetInfo"] is None and codes["ListArtifacts"] is None and codes["StatArtifact"] is None
    assert codes["PushArtifact"] == grpc.StatusCode.DATA_LOSS          # served: the bytes do not hash to SHA


def test_secret_file_is_private_and_survives_restarts(agent_factory, tmp_path):
    a = agent_factory(tmp_path / "s")
    f = a.store / "agent.secret"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    first = a.secret
    assert len(first) >= 40
    a.stop()
    f.chmod(0o644)                                   # someone loosened it: the agent tightens it at start
    b = agent_factory(tmp_path / "s")
    assert b.secret == first and stat.S_IMODE(f.stat().st_mode) == 0o600
    with AgentClient(b.address) as c:
        assert c.info()["agent_version"]


def test_non_loopback_listen_needs_tls(tmp_path):
    for listen in ("0.0.0.0:0", "[::]:0"):
        r = subprocess.run([sys.executable, "-m", "agent.cli", "serve", "--listen", listen, "--store",
                            str(tmp_path / "s")], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "refusing to listen" in lines[0] and "--tls-cert" in lines[0]
    r = subprocess.run([sys.executable, "-m", "agent.cli", "serve", "--listen", "0.0.0.0:0", "--store",
                        str(tmp_path / "s"), "--tls-cert", "c.pem"], capture_output=True, text=True, cwd=ROOT,
                       timeout=30)
    assert r.returncode == 2 and "all three of --tls-cert, --tls-key and --tls-ca" in r.stderr


def test_is_loopback():
    from agent.auth import is_loopback

    assert all(is_loopback(x) for x in ("127.0.0.1:5", "localhost:5", "[::1]:5", "127.3.4.5:0"))
    assert not any(is_loopback(x) for x in ("0.0.0.0:5", "[::]:5", ":5", "192.168.1.2:5", "device.lan:5"))


def test_refusal_log_never_holds_the_value_sent(agent):
    # the refusal log names the caller and the method, never the (possibly near-miss) value it sent
    with AgentClient(agent.address, secret="leaked-value-" * 4) as c, pytest.raises(AgentError):
        c.info()
    log = agent.log.read_text()
    assert "refused unauthenticated call /edgeagent.v1.Agent/GetInfo" in log and "leaked-value" not in log
