"""The agent's gRPC servicer: thin, delegating to the store, the worker (runtime) and the protocol.

One benchmark or inference session runs at a time per device (a device lock), so measurements
never disturb each other; artifact transfer and queries run concurrently with them.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
from concurrent import futures
from typing import Any, Iterator

import grpc

from agent import __version__, probes
from agent import runtimes as registry
from agent.runtimes.base import RunnerError
from agent.store import ArtifactStore, Header, StoreError
from agent.tensors import from_proto, spec_to_proto, to_proto
from agent.worker import Worker
from protos import edge_agent_pb2 as pb
from protos import edge_agent_pb2_grpc as pb_grpc

MAX_MESSAGE = 64 * 1024 * 1024
_STATUS = {
    "bad-input": grpc.StatusCode.INVALID_ARGUMENT, "not-found": grpc.StatusCode.NOT_FOUND,
    "bad-offset": grpc.StatusCode.FAILED_PRECONDITION, "incomplete": grpc.StatusCode.ABORTED,
    "corrupt": grpc.StatusCode.DATA_LOSS, "not-a-model": grpc.StatusCode.INVALID_ARGUMENT,
    "quota": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


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
    def __init__(self, store: ArtifactStore, cpu_affinity: str = ""):
        self.store = store
        self.started = time.time()
        self.device_lock = threading.Lock()
        self.cpu_affinity = cpu_affinity
        self.cache_dir = str(store.root / "cache")

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
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first PushArtifact message must be a header")
        h = first.header
        header = Header(sha256=h.sha256, size=h.size, file_name=h.file_name, format=h.format, offset=h.offset,
                        manifest_json=h.manifest_json)
        chunks = (m.data for m in request_iterator if m.WhichOneof("kind") == "data")
        try:
            r = self.store.receive(header, chunks)
        except StoreError as e:
            context.abort(_STATUS.get(e.code, grpc.StatusCode.UNKNOWN), e.message)
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
        worker = Worker(cpu_affinity=o.runtime_options.get("affinity", self.cpu_affinity))
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
        with self.device_lock:
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

    def Infer(self, request_iterator, context) -> Iterator[pb.InferResponse]:
        first = next(request_iterator, None)
        if first is None:
            return
        with self.device_lock:
            worker = None
            try:
                worker, info = self._open_worker(first.sha256, first.options, context)
                timeout = first.options.deadline_s or 120
                specs = [spec_to_proto(s) for s in info["outputs"]]
                rt, rtv = info["runtime"], str(info["describe"].get("version", ""))
                req = first
                while req is not None:
                    if req.inputs:
                        feed = {t.name: from_proto(t) for t in req.inputs}
                        out, ms = worker.infer(feed, timeout)
                        yield pb.InferResponse(id=req.id, outputs=[to_proto(k, v) for k, v in out.items()],
                                               latency_ms=ms, output_specs=specs, runtime=rt, runtime_version=rtv)
                        specs, rt, rtv = [], "", ""
                    req = next(request_iterator, None)
            except (RunnerError, StoreError) as e:
                yield pb.InferResponse(error=pb.Error(code=e.code, message=e.message))
            except ValueError as e:
                yield pb.InferResponse(error=pb.Error(code="bad-input", message=str(e)))
            finally:
                if worker:
                    worker.close()


def make_server(store_dir: str, listen: str, max_workers: int = 8, cpu_affinity: str = "",
                quota_bytes: int = 0) -> tuple[grpc.Server, int]:
    store = ArtifactStore(store_dir, quota_bytes=quota_bytes)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE),
                                  ("grpc.so_reuseport", 0), *KEEPALIVE])
    pb_grpc.add_AgentServicer_to_server(AgentServicer(store, cpu_affinity), server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen} (address in use or not available)")
    return server, port
