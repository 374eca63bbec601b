"""The agent's gRPC servicer: thin, delegating to the store, the worker (runtime) and the protocol.

One benchmark or inference session runs at a time per device (a device lock), so measurements
never disturb each other; artifact transfer and queries run concurrently with them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sys
import time
from concurrent import futures
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import grpc

from agent import __version__, probes
from agent import runtimes as registry
from agent.limits import (
    DeviceBusy,
    DeviceLock,
    IdleStream,
    LimitError,
    Limits,
    Slots,
    StreamIdle,
    check_run_options,
)
from agent.runtimes.base import RunnerError
from agent.store import ArtifactStore, Header, StoreError
from agent.tensors import from_proto, spec_to_proto, to_proto
from agent.worker import Worker, WorkerLimits
from protos import edge_agent_pb2 as pb
from protos import edge_agent_pb2_grpc as pb_grpc

_STATUS = {
    "bad-input": grpc.StatusCode.INVALID_ARGUMENT, "not-found": grpc.StatusCode.NOT_FOUND,
    "bad-offset": grpc.StatusCode.FAILED_PRECONDITION, "incomplete": grpc.StatusCode.ABORTED,
    "corrupt": grpc.StatusCode.DATA_LOSS, "not-a-model": grpc.StatusCode.INVALID_ARGUMENT,
    "quota": grpc.StatusCode.RESOURCE_EXHAUSTED, "too-large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "no-space": grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Infer errors after which the worker still holds a loaded model: report them for that request, go on
_PER_REQUEST = ("bad-input",)
log = logging.getLogger("agent.server")


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# proto3 `optional` fields: passed on only when the client set them, so 0 ("off") is kept and an unset
# field takes BenchConfig's default
_OPTIONAL_BENCH = ("runs", "min_seconds", "max_seconds", "warmup_runs", "warmup_seconds", "target_ci")
# HTTP/2 keepalive pings: a half-open link (a host that vanished mid-run) is found in ~40 s, which
# cancels the call and kills its worker, instead of holding the device lock until TCP gives up.
# The last option lets a client that pings as often not be cut off with "too many pings".
KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 10_000)]


def _options_dict(o: pb.RunOptions) -> dict[str, Any]:
    d: dict[str, Any] = {"threads": o.threads, "sample_batch": o.sample_batch}
    d.update({k: getattr(o, k) for k in _OPTIONAL_BENCH if o.HasField(k)})
    return d


class AgentServicer(pb_grpc.AgentServicer):
    def __init__(self, store: ArtifactStore, cpu_affinity: str = "", limits: Optional[Limits] = None,
                 worker_limits: Optional[WorkerLimits] = None):
        self.store = store
        self.started = time.time()
        self.limits = limits or Limits()
        self.worker_limits = worker_limits or WorkerLimits()
        self.device = DeviceLock()
        self.slots = Slots(self.limits.stream_slots)
        self.cpu_affinity = cpu_affinity
        self.cache_dir = str(store.root / "cache")

    @contextmanager
    def _slot(self, context: grpc.ServicerContext, what: str) -> Iterator[None]:
        """One of the streaming-call slots, or RESOURCE_EXHAUSTED at once: stalled streams never get every thread."""
        if not self.slots.take():
            log.warning("refused %s from %s: all %d streaming slots busy", what, context.peer(), self.slots.n)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"agent busy: {self.slots.n} uploads/runs already in progress; retry later")
        try:
            yield
        finally:
            self.slots.give()

    def _lock_device(self, what: str, context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        wait = self.limits.lock_wait_s if remaining is None else min(self.limits.lock_wait_s, remaining)
        self.device.acquire(f"{what} (client {context.peer()})", wait, context)

    # ---- info & store ---------------------------------------------------------------------------
    def GetInfo(self, request, context):
        rts = [pb.RuntimeInfo(**r) for r in registry.describe_all()]
        return pb.AgentInfo(
            agent_version=__version__, hostname=socket.gethostname(), platform=platform.platform(),
            machine=platform.machine(), cpu_count=os.cpu_count() or 0, mem_total_bytes=_mem_total(),
            runtimes=rts, facts_json=json.dumps(probes.device_facts()), store_dir=str(self.store.root),
            store_bytes=self.store.total_bytes(), uptime_s=time.time() - self.started,
            python=sys.version.split()[0], pid=os.getpid())

    def PushArtifact(self, request_iterator, context):
        with self._slot(context, "PushArtifact"):
            # a sender that goes quiet is cut after push_idle_s; what it sent stays for a resume
            stream = IdleStream(request_iterator, self.limits.push_idle_s)
            try:
                first = stream.next_or_idle()
                if first is None or first.WhichOneof("kind") != "header":
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first PushArtifact message must be a header")
                h = first.header
                header = Header(sha256=h.sha256, size=h.size, file_name=h.file_name, format=h.format,
                                offset=h.offset, manifest_json=h.manifest_json)
                chunks = (m.data for m in stream if m.WhichOneof("kind") == "data")
                r = self.store.receive(header, chunks)
            except StoreError as e:
                context.abort(_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
            except StreamIdle as e:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"upload stalled ({e}); the bytes received are kept: resume from StatArtifact's offset")
            finally:
                stream.close()
            return pb.ArtifactRef(**r)

    def StatArtifact(self, request, context):
        try:
            s = self.store.stat(request.sha256)
        except StoreError as e:
            context.abort(_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
        s.pop("sha256")
        return pb.ArtifactStat(**s)

    def ListArtifacts(self, request, context):
        items = self.store.list()
        return pb.ArtifactList(
            artifacts=[pb.ArtifactStat(**{k: v for k, v in a.items() if k != "sha256"}) for a in items],
            sha256=[a["sha256"] for a in items])

    def DeleteArtifact(self, request, context):
        try:
            return pb.DeleteResult(deleted=self.store.delete(request.sha256))
        except StoreError as e:
            context.abort(_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message)

    # ---- running models -------------------------------------------------------------------------
    def _open_worker(self, sha: str, o: pb.RunOptions, context: grpc.ServicerContext) -> tuple[Worker, dict[str, Any]]:
        """Start a worker and load the artifact in it (raises StoreError / RunnerError).

        The worker is tied to the call before the load: a client that goes away during a long load
        (a TensorRT engine build) stops it instead of leaving it to hold the device.
        """
        path = self.store.path(sha)
        meta = self.store.meta(sha)
        manifest = json.loads(meta.get("manifest_json") or "{}")
        self.store.touch(sha)
        prefer = tuple(x for x in o.runtime_options.get("prefer", "").split(",") if x)
        ro = {k: v for k, v in o.runtime_options.items() if k not in ("prefer", "affinity")}
        options = {"threads": o.threads, "runtime_options": ro, "manifest": manifest, "cache_dir": self.cache_dir,
                   "prefer": prefer}
        worker = Worker(cpu_affinity=o.runtime_options.get("affinity", self.cpu_affinity), limits=self.worker_limits)
        try:
            if not context.add_callback(worker.kill):  # False: the call has already ended
                raise RunnerError("cancelled", "the client went away before the model was loaded")
            # the client's deadline covers the whole call; an engine build may need more than 600 s
            info = worker.load(str(path), meta["format"], o.runtime, options, timeout=o.deadline_s or 600)
        except BaseException:
            worker.close()
            raise
        return worker, info

    def Benchmark(self, request, context) -> Iterator[pb.BenchmarkEvent]:
        o = request.options
        try:
            check_run_options(o, self.limits, os.cpu_count() or 1)
        except LimitError as e:
            yield pb.BenchmarkEvent(error=pb.Error(code="bad-input", message=str(e)))
            return
        with self._slot(context, "Benchmark"):
            try:
                self._lock_device(f"Benchmark of {request.sha256[:12]}", context)
            except LimitError as e:
                yield pb.BenchmarkEvent(error=pb.Error(code="busy" if isinstance(e, DeviceBusy) else "cancelled",
                                                       message=str(e)))
                return
            worker = None
            try:
                worker, info = self._open_worker(request.sha256, o, context)  # a client that goes away stops it
                yield pb.BenchmarkEvent(started=pb.Started(
                    runtime=info["runtime"], runtime_version=str(info["describe"].get("version", "")),
                    delegate=str(info["describe"].get("delegate", "")),
                    inputs=[spec_to_proto(s) for s in info["inputs"]],
                    outputs=[spec_to_proto(s) for s in info["outputs"]],
                    env_json=json.dumps(info["env_before"]), load_ms=info["load_ms"], import_ms=info["import_ms"],
                    describe_json=json.dumps(info["describe"], default=str)))
                feeds = None
                if request.inputs:
                    feeds = [{t.name: from_proto(t) for t in request.inputs}]
                timeout = (o.max_seconds or 60) * 2 + 120 if not o.deadline_s else o.deadline_s
                for kind, payload in worker.bench(_options_dict(o), feeds, o.seed or 0, o.distinct_inputs or 4, timeout):
                    if kind == "samples":
                        yield pb.BenchmarkEvent(samples=pb.SampleBatch(**payload))
                    elif kind == "progress":
                        yield pb.BenchmarkEvent(progress=pb.Progress(**payload))
                    elif kind == "summary":
                        s = payload
                        yield pb.BenchmarkEvent(summary=pb.Summary(
                            runs=s["runs"], duration_s=s["duration_s"], p50=s["p50"], p90=s["p90"], p99=s["p99"],
                            mean=s["mean"], std=s["std"], min=s["min"], max=s["max"], ci_lo=s["ci_lo"],
                            ci_hi=s["ci_hi"], load_ms=info["load_ms"], first_ms=s["first_ms"],
                            warmup_ms=s["warmup_ms"], warmup_runs=s["warmup_runs"],
                            peak_rss_load_mb=s["peak_rss_load_mb"], peak_rss_mb=s["peak_rss_mb"],
                            env_json=json.dumps(s["env_after"]), flags=s["flags"], stop_reason=s["stop_reason"],
                            describe_json=json.dumps(s.get("describe_after") or {}, default=str)))
            except (RunnerError, StoreError) as e:
                yield pb.BenchmarkEvent(error=pb.Error(code=e.code, message=e.message))
            except ValueError as e:
                yield pb.BenchmarkEvent(error=pb.Error(code="bad-input", message=str(e)))
            finally:
                if worker:
                    worker.close()
                self.device.release()

    def Profile(self, request, context) -> Iterator[pb.ProfileEvent]:
        """A separate profiled run in its own worker (never inside a Benchmark), streamed: started, ops, summary."""
        from agent.profile_run import worker_profile

        o = request.options
        try:
            check_run_options(o, self.limits, os.cpu_count() or 1)
        except LimitError as e:
            yield pb.ProfileEvent(error=pb.Error(code="bad-input", message=str(e)))
            return
        with self._slot(context, "Profile"):
            try:
                self._lock_device(f"Profile of {request.sha256[:12]}", context)
            except LimitError as e:
                yield pb.ProfileEvent(error=pb.Error(code="busy" if isinstance(e, DeviceBusy) else "cancelled",
                                                     message=str(e)))
                return
            worker = None
            try:
                worker, info = self._open_worker(request.sha256, o, context)
                yield pb.ProfileEvent(started=pb.Started(
                    runtime=info["runtime"], runtime_version=str(info["describe"].get("version", "")),
                    delegate=str(info["describe"].get("delegate", "")), env_json=json.dumps(info["env_before"]),
                    load_ms=info["load_ms"], import_ms=info["import_ms"],
                    describe_json=json.dumps(info["describe"], default=str)))
                feeds = [{t.name: from_proto(t) for t in request.inputs}] if request.inputs else None
                prof = worker_profile(worker, feeds, o.seed or 0, request.runs or 10, o.deadline_s or 600)
                for op in prof["ops"]:
                    yield pb.ProfileEvent(op=pb.OpProfile(**op))
                yield pb.ProfileEvent(summary=pb.ProfileSummary(
                    profiler=prof.get("profiler", ""), runs=prof["runs"], run_totals_ms=prof["run_totals_ms"],
                    unprofiled_ms=prof["unprofiled_ms"], ops=len(prof["ops"]),
                    profiled_wall_ms=prof.get("wall_ms", [])))
            except (RunnerError, StoreError) as e:
                yield pb.ProfileEvent(error=pb.Error(code=e.code, message=e.message))
            except ValueError as e:
                yield pb.ProfileEvent(error=pb.Error(code="bad-input", message=str(e)))
            finally:
                if worker:
                    worker.close()
                self.device.release()

    def Infer(self, request_iterator, context) -> Iterator[pb.InferResponse]:
        with self._slot(context, "Infer"):
            # a client that sends one request and then nothing would hold the device forever: idle timeout
            stream = IdleStream(request_iterator, self.limits.infer_idle_s)
            try:
                yield from self._infer(stream, context)
            finally:
                stream.close()

    def _infer(self, stream: IdleStream, context) -> Iterator[pb.InferResponse]:
        try:
            first = stream.next_or_idle()
        except StreamIdle as e:
            yield pb.InferResponse(error=pb.Error(code="idle", message=f"Infer stream idle ({e}) before its first request"))
            return
        if first is None:
            return
        try:
            check_run_options(first.options, self.limits, os.cpu_count() or 1)
            self._lock_device(f"Infer of {first.sha256[:12]}", context)
        except LimitError as e:
            code = "busy" if isinstance(e, DeviceBusy) else "bad-input"
            yield pb.InferResponse(error=pb.Error(code=code, message=str(e)))
            return
        worker = None
        req = first
        try:
            worker, info = self._open_worker(first.sha256, first.options, context)
            timeout = first.options.deadline_s or 120
            specs = [spec_to_proto(s) for s in info["outputs"]]
            rt, rtv = info["runtime"], str(info["describe"].get("version", ""))
            while req is not None:
                if req.inputs:
                    try:
                        feed = {t.name: from_proto(t) for t in req.inputs}
                        out, ms = worker.infer(feed, timeout)
                    except (RunnerError, ValueError) as e:
                        code, msg = (e.code, e.message) if isinstance(e, RunnerError) else ("bad-input", str(e))
                        if code not in _PER_REQUEST:
                            raise
                        # this request failed; the model is still loaded: say so for its id and go on
                        yield pb.InferResponse(id=req.id, error=pb.Error(code=code, message=msg))
                    else:
                        yield pb.InferResponse(id=req.id, outputs=[to_proto(k, v) for k, v in out.items()],
                                               latency_ms=ms, output_specs=specs, runtime=rt, runtime_version=rtv)
                        specs, rt, rtv = [], "", ""
                req = stream.next_or_idle()
        except StreamIdle as e:
            yield pb.InferResponse(error=pb.Error(
                code="idle", message=f"Infer stream idle ({e}); the device was released (agent serve --infer-idle-s)"))
        except (RunnerError, StoreError) as e:
            # the worker is gone or never loaded: no later request can run; say which one stopped the stream
            yield pb.InferResponse(id=req.id if req is not None else 0, error=pb.Error(
                code=e.code, message=f"{e.message} (at request {req.id if req is not None else 0}; later requests "
                                     "in this stream were not run)"))
        except ValueError as e:
            yield pb.InferResponse(error=pb.Error(code="bad-input", message=str(e)))
        finally:
            if worker:
                worker.close()
            self.device.release()


def make_server(store_dir: str, listen: str, max_workers: int = 0, cpu_affinity: str = "",
                quota_bytes: int = 0, limits: Optional[Limits] = None, worker_limits: Optional[WorkerLimits] = None,
                store_options: Optional[dict[str, Any]] = None, interceptors: tuple = (),
                credentials: Optional[grpc.ServerCredentials] = None) -> tuple[grpc.Server, int]:
    limits = limits or Limits()
    store = ArtifactStore(store_dir, quota_bytes=quota_bytes, **(store_options or {}))
    # streaming calls take at most stream_slots threads; the 8 beyond them always answer queries
    workers = max_workers or limits.stream_slots + 8
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors),
                         options=[("grpc.max_receive_message_length", limits.max_message_bytes),
                                  ("grpc.max_send_message_length", limits.max_message_bytes),
                                  ("grpc.so_reuseport", 0), *KEEPALIVE])
    pb_grpc.add_AgentServicer_to_server(AgentServicer(store, cpu_affinity, limits, worker_limits), server)
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen} (address in use or not available)")
    return server, port
