"""AgentClient: a typed wrapper over the gRPC stub (push with resume, benchmark stream, infer stream)."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import grpc
import numpy as np

from agent.tensors import from_proto, to_proto
from host.errors import UserError
from protos import edge_agent_pb2 as pb
from protos import edge_agent_pb2_grpc as pb_grpc

CHUNK = 1 << 20
MAX_MESSAGE = 64 * 1024 * 1024
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


SECRET_METADATA = "x-edgebench-secret"    # agent.auth.METADATA_KEY (the host may import agent; kept literal here)


@dataclass
class TlsConfig:
    """Mutual TLS to an agent reached without a tunnel: the project CA, this host's cert and key (PEM paths),
    and the name the agent's certificate was issued for (pinned: any other agent name is refused)."""
    ca: str
    cert: str
    key: str
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            ca, cert, key = (Path(x).expanduser().read_bytes() for x in (self.ca, self.cert, self.key))
        except OSError as e:
            raise AgentError(f"cannot read TLS file: {e}", "tls") from e
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


# address -> (secret, tls): filled by transports when they bring an agent's secret back, so every
# AgentClient made for that address (deploy, eval, targets check, tests) authenticates without being told
_KNOWN: dict[str, tuple[str, Optional[TlsConfig]]] = {}
_KNOWN_LOCK = threading.Lock()


def remember_agent(address: str, secret: str, tls: Optional[TlsConfig] = None) -> None:
    with _KNOWN_LOCK:
        _KNOWN[address] = (secret.strip(), tls)


def read_secret_file(path: str | Path) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise AgentError(f"cannot read the agent's secret {path}: {e.strerror or e}; is the agent started?",
                         "unauthenticated") from e


class _Secret(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the agent's secret to every call's metadata."""

    def __init__(self, secret: str):
        self.md = (SECRET_METADATA, secret)

    def _details(self, d: Any) -> Any:
        return _CallDetails(d.method, d.timeout, [*(d.metadata or ()), self.md], d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


class AgentError(UserError):
    """The agent refused or failed a request (message from the device), or cannot be reached."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def _rpc_error(address: str, e: grpc.RpcError, what: str) -> AgentError:
    code = e.code() if hasattr(e, "code") else None
    detail = e.details() if hasattr(e, "details") else str(e)
    if code == grpc.StatusCode.UNAVAILABLE:
        return AgentError(f"agent at {address} unreachable during {what}: {detail}; is `agent serve` running "
                          "(host agent status --target ...)?", "unavailable")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AgentError(f"agent at {address} refused {what}: not authenticated ({detail}); connect through the "
                          "target's transport (it reads the agent's secret) or pass the secret", "unauthenticated")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AgentError(f"{what} on agent {address} timed out ({detail}); raise --timeout or check the link",
                          "timeout")
    return AgentError(f"{what} failed on agent {address}: {detail}", code.name.lower() if code else "")


class AgentClient:
    def __init__(self, address: str, timeout: float = 30.0, secret: Optional[str] = None,
                 tls: Optional[TlsConfig] = None):
        """`secret` / `tls` default to what a transport remembered for this address (remember_agent)."""
        self.address = address
        self.timeout = timeout
        with _KNOWN_LOCK:
            known_secret, known_tls = _KNOWN.get(address, ("", None))
        secret = known_secret if secret is None else secret
        tls = tls or known_tls
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        if tls:
            if tls.server_name:     # certificate pinning: the agent's cert must name this target
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.secure_channel(address, tls.credentials(), options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        # channel_ready_future needs the plain channel; calls go through the one that adds the secret
        calls = grpc.intercept_channel(self.channel, _Secret(secret)) if secret else self.channel
        self.stub = pb_grpc.AgentStub(calls)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as e:
            raise AgentError(f"agent at {self.address} unreachable (no answer in {timeout:.0f} s)",
                             "unavailable") from e

    # ---- queries ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        try:
            r = self.stub.GetInfo(pb.GetInfoRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _rpc_error(self.address, e, "GetInfo") from e
        return {
            "agent_version": r.agent_version, "hostname": r.hostname, "platform": r.platform, "machine": r.machine,
            "cpu_count": r.cpu_count, "mem_total_bytes": r.mem_total_bytes, "python": r.python, "pid": r.pid,
            "runtimes": [{"name": x.name, "version": x.version, "formats": list(x.formats),
                          "delegates": list(x.delegates), "available": x.available, "detail": x.detail}
                         for x in r.runtimes],
            "facts": json.loads(r.facts_json or "{}"), "store_dir": r.store_dir, "store_bytes": r.store_bytes,
            "uptime_s": r.uptime_s}

    def stat(self, sha256: str) -> dict[str, Any]:
        try:
            r = self.stub.StatArtifact(pb.ArtifactQuery(sha256=sha256), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _rpc_error(self.address, e, "StatArtifact") from e
        return {"exists": r.exists, "size": r.size, "bytes_held": r.bytes_held, "format": r.format,
                "file_name": r.file_name}

    def list(self) -> list[dict[str, Any]]:
        try:
            r = self.stub.ListArtifacts(pb.ListArtifactsRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _rpc_error(self.address, e, "ListArtifacts") from e
        return [{"sha256": s, "size": a.size, "format": a.format, "file_name": a.file_name}
                for s, a in zip(r.sha256, r.artifacts)]

    def delete(self, sha256: str) -> bool:
        try:
            return self.stub.DeleteArtifact(pb.ArtifactQuery(sha256=sha256), timeout=self.timeout).deleted
        except grpc.RpcError as e:
            raise _rpc_error(self.address, e, "DeleteArtifact") from e

    # ---- push ---------------------------------------------------------------------------------
    def push(self, path: Path, sha256: str, fmt: str, manifest_json: str = "", retries: int = 3,
             progress: Optional[Callable[[int, int], None]] = None, timeout: float = 3600.0) -> dict[str, Any]:
        """Upload an artifact, sending only the bytes the agent does not hold yet.

        Returns {sent, skipped, already_present}. A cut link is retried from the offset the agent
        reports (StatArtifact), `retries` times; every retry sends only the missing bytes.
        """
        path = Path(path)
        size = path.stat().st_size
        sent_total = 0
        for attempt in range(retries + 1):
            st = self.stat(sha256)
            if st["exists"]:
                return {"sent": sent_total, "skipped": size - sent_total, "already_present": sent_total == 0}
            offset = st["bytes_held"] if st["bytes_held"] <= size else 0
            sent_this = [0]

            def chunks(offset: int = offset, sent_this: list = sent_this) -> Iterator[pb.ArtifactChunk]:
                yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=sha256, size=size, file_name=path.name,
                                                                format=fmt, offset=offset, manifest_json=manifest_json))
                with open(path, "rb") as f:
                    f.seek(offset)
                    while block := f.read(CHUNK):
                        sent_this[0] += len(block)
                        if progress:
                            progress(offset + sent_this[0], size)
                        yield pb.ArtifactChunk(data=block)

            try:
                self.stub.PushArtifact(chunks(), timeout=timeout)
                sent_total += sent_this[0]
                return {"sent": sent_total, "skipped": size - sent_total, "already_present": False}
            except grpc.RpcError as e:
                sent_total += sent_this[0]
                if e.code() in _RESUMABLE and attempt < retries:
                    time.sleep(min(2.0, 0.2 * (attempt + 1)))
                    continue
                raise _rpc_error(self.address, e, f"push of {path.name}") from e
        raise AgentError(f"push of {path.name} failed after {retries} retries")

    # ---- run ----------------------------------------------------------------------------------
    @staticmethod
    def run_options(**kw: Any) -> pb.RunOptions:
        ro = {str(k): str(v) for k, v in (kw.pop("runtime_options", None) or {}).items()}
        return pb.RunOptions(runtime_options=ro, **{k: v for k, v in kw.items() if v is not None})

    def benchmark(self, sha256: str, options: pb.RunOptions, inputs: Optional[dict[str, np.ndarray]] = None,
                  on_event: Optional[Callable[[str, Any], None]] = None, timeout: Optional[float] = None
                  ) -> dict[str, Any]:
        """Run the protocol on the device; returns started/summary/samples. Raises AgentError on an error event.

        Everything that arrived is kept in the returned dict even when the stream breaks (then
        `result["incomplete"]` names the reason)."""
        req = pb.BenchmarkRequest(sha256=sha256, options=options,
                                  inputs=[to_proto(k, v) for k, v in (inputs or {}).items()])
        result: dict[str, Any] = {"started": None, "summary": None, "samples": [], "warmup_samples": []}
        # a NaN/inf max_seconds must reach the agent (which refuses it in one line), not become a NaN deadline here
        ms = options.max_seconds if math.isfinite(options.max_seconds) and 0 < options.max_seconds < 1e6 else 60
        deadline = timeout or (ms * 2 + 180)
        try:
            for ev in self.stub.Benchmark(req, timeout=deadline):
                kind = ev.WhichOneof("event")
                if kind == "started":
                    s = ev.started
                    result["started"] = {
                        "runtime": s.runtime, "runtime_version": s.runtime_version, "delegate": s.delegate,
                        "inputs": [_spec(t) for t in s.inputs], "outputs": [_spec(t) for t in s.outputs],
                        "env_before": json.loads(s.env_json or "{}"), "load_ms": s.load_ms, "import_ms": s.import_ms,
                        "describe": json.loads(s.describe_json or "{}")}
                    payload: Any = result["started"]
                elif kind == "samples":
                    key = "samples" if ev.samples.phase == "steady" else "warmup_samples"
                    result[key].extend(ev.samples.latency_ms)
                    payload = ev.samples
                elif kind == "progress":
                    payload = ev.progress
                elif kind == "summary":
                    m = ev.summary
                    result["summary"] = {f.name: getattr(m, f.name) for f in m.DESCRIPTOR.fields
                                         if f.name not in ("flags", "env_json", "describe_json")}
                    result["summary"]["flags"] = list(m.flags)
                    result["summary"]["env_after"] = json.loads(m.env_json or "{}")
                    # e.g. TensorRT's H2D / compute / D2H split, known only once the runs are done
                    result["summary"]["describe_after"] = json.loads(m.describe_json or "{}")
                    payload = result["summary"]
                else:
                    raise AgentError(f"{ev.error.message}", ev.error.code)
                if on_event:
                    on_event(kind, payload)
        except grpc.RpcError as e:
            err = _rpc_error(self.address, e, "benchmark")
            result["incomplete"] = str(err)
            if result["summary"] is None:
                if result["started"] is None or not result["samples"]:
                    raise err from e
                result["summary"] = partial_summary(result)
        if result["summary"] is None:
            raise AgentError("benchmark stream ended without a summary")
        return result

    def profile(self, sha256: str, options: pb.RunOptions, runs: int = 10,
                inputs: Optional[dict[str, np.ndarray]] = None, on_event: Optional[Callable[[str, Any], None]] = None,
                timeout: Optional[float] = None) -> dict[str, Any]:
        """A profiled run with the runtime's own per-op profiler: {started, ops, summary}. What arrived is kept if
        the stream breaks (`incomplete` names why, `summary` may be None); an error event raises AgentError
        (code "profile-unavailable" when the runtime has no profiler)."""
        req = pb.ProfileRequest(sha256=sha256, options=options, runs=runs,
                                inputs=[to_proto(k, v) for k, v in (inputs or {}).items()])
        result: dict[str, Any] = {"started": None, "ops": [], "summary": None}
        try:
            for ev in self.stub.Profile(req, timeout=timeout or 600):
                kind = ev.WhichOneof("event")
                if kind == "started":
                    s = ev.started
                    result["started"] = {"runtime": s.runtime, "runtime_version": s.runtime_version,
                                         "delegate": s.delegate, "load_ms": s.load_ms,
                                         "describe": json.loads(s.describe_json or "{}")}
                elif kind == "op":
                    o = ev.op
                    result["ops"].append({"index": o.index, "name": o.name, "op_type": o.op_type,
                                          "precision": o.precision, "backend": o.backend, "times_ms": list(o.times_ms)})
                elif kind == "summary":
                    m = ev.summary
                    result["summary"] = {"profiler": m.profiler, "runs": m.runs, "run_totals_ms": list(m.run_totals_ms),
                                         "unprofiled_ms": list(m.unprofiled_ms), "ops": m.ops,
                                         "profiled_wall_ms": list(m.profiled_wall_ms)}
                else:
                    raise AgentError(ev.error.message, ev.error.code)
                if on_event:
                    on_event(kind, result)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:   # an agent from before the Profile call
                raise AgentError(f"the agent at {self.address} predates per-op profiles: update it (host agent "
                                 "stop, then deploy again to start the current one)", "unimplemented") from e
            err = _rpc_error(self.address, e, "profile")
            if not result["ops"]:
                raise err from e
            result["incomplete"] = str(err)
        if result["summary"] is None and "incomplete" not in result:
            raise AgentError("profile stream ended without a summary")
        return result

    def infer(self, sha256: str, feeds: Iterable[dict[str, np.ndarray]], options: Optional[pb.RunOptions] = None,
              timeout: float = 3600.0, runtime: Optional[dict[str, str]] = None
              ) -> Iterator[tuple[dict[str, np.ndarray], float]]:
        """Stream input sets through the device; yields (outputs, device latency ms) in order.
        `runtime`, when given, is filled with the name and version of the runtime the device used."""
        def requests() -> Iterator[pb.InferRequest]:
            yield pb.InferRequest(sha256=sha256, options=options or pb.RunOptions())
            for i, feed in enumerate(feeds):
                yield pb.InferRequest(id=i, inputs=[to_proto(k, v) for k, v in feed.items()])

        try:
            for r in self.stub.Infer(requests(), timeout=timeout):
                if r.HasField("error") and r.error.code:
                    raise AgentError(r.error.message, r.error.code)
                if r.runtime and runtime is not None:
                    runtime.update(name=r.runtime, version=r.runtime_version)
                yield {t.name: from_proto(t) for t in r.outputs}, r.latency_ms
        except grpc.RpcError as e:
            raise _rpc_error(self.address, e, "inference") from e


def partial_summary(result: dict[str, Any]) -> dict[str, Any]:
    """A summary computed on the host from the steady-state samples that arrived before the link
    broke, with the same statistics the agent uses; flagged so no reader takes it for a full run."""
    from agent.bench import summarize

    samples, warm = result["samples"], result["warmup_samples"]
    s = summarize(samples)
    s.update({"runs": len(samples), "duration_s": sum(samples) / 1e3, "load_ms": result["started"]["load_ms"],
              "first_ms": float("nan"), "warmup_ms": sum(warm), "warmup_runs": len(warm),
              "peak_rss_load_mb": float("nan"), "peak_rss_mb": float("nan"), "env_after": {},
              "stop_reason": "link-lost", "describe_after": {},
              "flags": [f"incomplete(link lost after {len(samples)} steady runs; statistics from the samples "
                        f"that arrived, computed on the host)"]})
    return s


def _spec(t: pb.TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "scale": t.scale, "zero_point": t.zero_point}
