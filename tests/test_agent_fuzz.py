"""Generated messages (hypothesis) against every RPC of one real agent: it keeps serving, answers each call
with a status (never hangs), and its store keeps its invariant: every published object hashes to its name,
and nothing published is lost. Bounded: ~25 examples per RPC, agent caps of 1 s / 50 runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="needs the dev extra (hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from host.client import AgentClient  # noqa: E402
from protos import edge_agent_pb2 as pb  # noqa: E402

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REAL = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8          # passes the sniff, not loadable
REAL_SHA = hashlib.sha256(REAL).hexdigest()
METHODS = ("GetInfo", "PushArtifact", "StatArtifact", "ListArtifacts", "DeleteArtifact", "Benchmark", "Infer")

shas = st.one_of(st.just(REAL_SHA), st.text(max_size=70), st.text("0123456789abcdef", min_size=64, max_size=64),
                 st.just(REAL_SHA + "\n"), st.just(REAL_SHA.upper()))
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
i32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def run_options(draw) -> pb.RunOptions:
    o = pb.RunOptions(threads=draw(i32), distinct_inputs=draw(i32), sample_batch=draw(i32),
                      deadline_s=draw(st.one_of(floats, st.floats(0, 5))), seed=draw(st.integers(0, 2**40)),
                      runtime=draw(st.sampled_from(["", "litert", "nope"])),
                      runtime_options=draw(st.dictionaries(st.sampled_from(["affinity", "prefer", "xnnpack"]),
                                                           st.text(max_size=12), max_size=2)))
    for f in ("runs", "warmup_runs"):
        if draw(st.booleans()):
            setattr(o, f, draw(i32))
    for f in ("min_seconds", "max_seconds", "warmup_seconds", "target_ci"):
        if draw(st.booleans()):
            setattr(o, f, draw(st.one_of(floats, st.floats(0, 1))))
    return o


@st.composite
def tensors(draw) -> list[pb.Tensor]:
    return [pb.Tensor(name=draw(st.text(max_size=10)), dtype=draw(st.sampled_from(["float32", "int8", "bogus", ""])),
                      shape=draw(st.lists(st.integers(-3, 2**33), max_size=4)), data=draw(st.binary(max_size=64)))
            for _ in range(draw(st.integers(0, 2)))]


@st.composite
def push_streams(draw) -> list[pb.ArtifactChunk]:
    msgs = []
    if draw(st.booleans()):
        size = draw(st.one_of(st.just(len(REAL)), st.integers(-5, 2**62)))
        msgs.append(pb.ArtifactChunk(header=pb.ArtifactHeader(
            sha256=draw(shas), size=size, file_name=draw(st.text(max_size=20)),
            format=draw(st.sampled_from(["tflite", "ptl", "onnx", "pte", "torchscript", "zip", ""])),
            offset=draw(st.integers(-5, 5000)), manifest_json=draw(st.text(max_size=30)))))
    for _ in range(draw(st.integers(0, 3))):
        msgs.append(pb.ArtifactChunk(data=draw(st.one_of(st.binary(max_size=3000), st.just(REAL)))))
    return msgs


@pytest.fixture
def fuzz_agent(agent_factory):
    return agent_factory(args=("--max-run-seconds", "1", "--max-runs", "50", "--lock-wait-s", "5",
                               "--infer-idle-s", "5", "--push-idle-s", "5"))


def _invariants(store: Path, published: set[str]) -> set[str]:
    now = set()
    for d in (store / "objects").iterdir():
        if d.name.startswith(".tmp"):
            continue
        data = (d / "data").read_bytes()
        assert hashlib.sha256(data).hexdigest() == d.name, f"{d.name} does not hash to its name"
        now.add(d.name)
    return now


def test_fuzz_every_rpc(fuzz_agent):
    store = fuzz_agent.store
    counts = {m: 0 for m in METHODS}
    with AgentClient(fuzz_agent.address, timeout=20) as c:
        stub = c.stub

        def check(deleted: set[str] | None = None) -> None:
            assert c.info()["agent_version"]           # still serving
            now = _invariants(store, set())
            assert check.published - (deleted or set()) <= now, "a published artifact was lost"
            check.published = now
        check.published = set()

        def call(fn) -> None:
            try:
                r = fn()
                if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
                    list(r)
            except grpc.RpcError as e:
                # a status for every bad request; never a hang, never the server gone
                assert e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e

        @FUZZ
        @given(push_streams())
        def push(msgs):
            counts["PushArtifact"] += 1
            call(lambda: stub.PushArtifact(iter(msgs), timeout=20))
            check()

        @FUZZ
        @given(shas, st.sampled_from(["StatArtifact", "DeleteArtifact"]))
        def stat_delete(sha, method):
            counts[method] += 1
            call(lambda: getattr(stub, method)(pb.ArtifactQuery(sha256=sha), timeout=20))
            check({sha.lower()} if method == "DeleteArtifact" else None)

        @FUZZ
        @given(shas, run_options(), tensors())
        def benchmark(sha, o, ts):
            counts["Benchmark"] += 1
            call(lambda: stub.Benchmark(pb.BenchmarkRequest(sha256=sha, options=o, inputs=ts), timeout=20))
            check()

        @FUZZ
        @given(shas, run_options(), st.lists(tensors(), max_size=3))
        def infer(sha, o, feeds):
            counts["Infer"] += 1
            reqs = [pb.InferRequest(sha256=sha, options=o)] + [pb.InferRequest(id=i, inputs=t)
                                                              for i, t in enumerate(feeds)]
            call(lambda: stub.Infer(iter(reqs), timeout=20))
            check()

        @FUZZ
        @given(st.sampled_from(METHODS), st.binary(max_size=200))
        def raw_bytes(method, blob):
            # bytes that are no valid protobuf message at all, straight onto the wire
            counts[method] += 1
            ch = c.channel
            md = (("x-edgebench-secret", fuzz_agent.secret),)
            path = f"/edgeagent.v1.Agent/{method}"
            streaming_in = method in ("PushArtifact", "Infer")
            streaming_out = method in ("Benchmark", "Infer")
            kind = {(False, False): ch.unary_unary, (True, False): ch.stream_unary,
                    (False, True): ch.unary_stream, (True, True): ch.stream_stream}[(streaming_in, streaming_out)]
            fn = kind(path)
            arg = iter([blob]) if streaming_in else blob
            call(lambda: fn(arg, timeout=20, metadata=md))
            check()

        push()
        stat_delete()
        call(lambda: stub.ListArtifacts(pb.ListArtifactsRequest(), timeout=20))
        counts["ListArtifacts"] += 1
        benchmark()
        infer()
        raw_bytes()
        check()
    print("fuzz calls per RPC:", counts)
    assert all(n > 0 for n in counts.values())
