"""Deploy orchestration: targets x artifacts -> pushed, benchmarked, stored results.

Targets run concurrently (one thread each); on one target the artifacts run one after another, so
a device never measures two models at once. Whatever a target did before failing is kept.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from host.artifacts import Artifact
from host.client import AgentClient, AgentError
from host.errors import UserError
from host.results.store import ResultStore
from host.targets import Target
from host.transports import open_transport

Log = Callable[[str], None]


@dataclass
class RunSettings:
    threads: Optional[int] = None        # None = target's default, else 1; 0 = the runtime's own default
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    warmup_runs: int = 5
    warmup_seconds: float = 0.2
    target_ci: float = 0.01
    runtime: str = ""
    runtime_options: dict[str, str] = field(default_factory=dict)
    timeout: float = 0.0                 # per call; 0 = derived from max_seconds
    data: Optional[str] = None           # also evaluate accuracy on this dataset
    data_limit: int = 1000
    preprocess: Optional[str] = None     # image-folder preprocessing for `data` (Preprocess.parse)
    seed: int = 0
    inputs: Optional[dict[str, Any]] = None   # user tensors instead of random inputs

    def effective_threads(self, target: Target) -> int:
        # One thread unless asked: all-core runs on a shared or big.LITTLE device are the noisiest numbers there are.
        if self.threads is not None:
            return self.threads
        return target.threads if target.threads > 0 else 1

    def run_options(self, target: Target):
        ro = dict(self.runtime_options)
        if target.prefer_runtimes and "prefer" not in ro:
            ro["prefer"] = ",".join(target.prefer_runtimes)
        return AgentClient.run_options(
            threads=self.effective_threads(target), runs=self.runs, min_seconds=self.min_seconds,
            max_seconds=self.max_seconds, warmup_runs=self.warmup_runs, warmup_seconds=self.warmup_seconds,
            target_ci=self.target_ci, runtime=self.runtime, runtime_options=ro, deadline_s=self.timeout,
            seed=self.seed)


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _push_progress(log: Log, prefix: str, name: str) -> Callable[[int, int], None]:
    last = [0.0]

    def cb(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            log(f"{prefix} push {name}: {done / 2**20:.1f}/{total / 2**20:.1f} MiB ({100 * done / max(total, 1):.0f}%)")
    return cb


def _bench_progress(log: Log, prefix: str, name: str) -> Callable[[str, Any], None]:
    def cb(kind: str, ev: Any) -> None:
        if kind == "started":
            log(f"{prefix} {name}: {ev['runtime']} {ev['runtime_version']} delegate={ev['delegate'] or '-'} "
                f"loaded in {ev['load_ms']:.1f} ms (runtime import {ev['import_ms']:.0f} ms)")
        elif kind == "progress" and ev.phase != "done":
            ci = f"±{ev.ci_rel * 100:.1f}%" if ev.ci_rel < 10 else "±?"
            log(f"{prefix} {name}: {ev.runs_done} runs {ev.elapsed_s:.1f}s p50 {ev.current_p50_ms:.3f} ms {ci}")
    return cb


def stand_in_flags(m: Any, runtime: str) -> list[str]:
    """A TensorRT artifact that ran on another runtime (a device without TensorRT) is not a TensorRT
    number, and an fp16 build flag did nothing there: say so next to the figure."""
    if m.platform != "tensorrt" or runtime == "tensorrt":
        return []
    flags = [f"stand-in({runtime}, not a TensorRT engine)"]
    if m.precision == "fp16":
        flags.append("fp16-not-applied(ran the fp32 graph)")
    return flags


def benchmark_record(target: Target, art: Artifact, res: dict[str, Any], info: dict[str, Any],
                     settings: RunSettings) -> dict[str, Any]:
    s, st, m = res["summary"], res["started"], art.manifest
    flags = list(s["flags"]) + stand_in_flags(m, st["runtime"])
    return {
        "target": target.name, "target_kind": target.kind, "device": {k: info.get(k) for k in (
            "hostname", "platform", "machine", "cpu_count", "mem_total_bytes", "agent_version", "facts")},
        "artifact": art.path.name, "sha256": m.sha256, "model_name": m.model_name, "platform": m.platform,
        "method": m.method, "precision": m.precision, "format": m.format, "size_bytes": m.size_bytes, "task": m.task,
        "runtime": {"name": st["runtime"], "version": st["runtime_version"]}, "delegate": st["delegate"],
        "threads": st["describe"].get("threads", settings.threads), "describe": st["describe"],
        "describe_after": s.get("describe_after") or {},
        "runs": s["runs"], "duration_s": s["duration_s"], "stop_reason": s["stop_reason"],
        "latency_ms": {k: s[k] for k in ("p50", "p90", "p99", "mean", "std", "min", "max")} | {
            "ci95": [s["ci_lo"], s["ci_hi"]]},
        "phases_ms": {"import": st.get("import_ms"), "load": s["load_ms"], "first": s["first_ms"],
                      "warmup": s["warmup_ms"]},
        "warmup_runs": s["warmup_runs"], "peak_rss_mb": s["peak_rss_mb"], "peak_rss_load_mb": s["peak_rss_load_mb"],
        "env_before": st["env_before"], "env_after": s["env_after"], "flags": flags,
        "settings": {k: v for k, v in settings.__dict__.items() if k not in ("data", "inputs", "preprocess")},
        "inputs": "user" if settings.inputs else f"random(seed={settings.seed})",
        "samples": res["samples"], "incomplete": res.get("incomplete"), "manifest": m.__dict__ | {
            "inputs": [t.__dict__ for t in m.inputs], "outputs": [t.__dict__ for t in m.outputs]},
    }


def deploy_target(target: Target, artifacts: list[Artifact], settings: RunSettings, store: ResultStore,
                  log: Log = stderr_log, dataset: Any = None) -> list[dict[str, Any]]:
    prefix = f"[{target.name}]"
    out: list[dict[str, Any]] = []

    def failed(e: Exception) -> list[dict[str, Any]]:
        # an unreachable device fails its own rows; the other targets of the deploy carry on
        log(f"{prefix} error: {e}")
        return [{"target": target.name, "artifact": a.path.name, "sha256": a.manifest.sha256, "error": str(e)}
                for a in artifacts]

    try:
        transport = open_transport(target)
        address = transport.connect(lambda m: log(f"{prefix} {m}"))
    except UserError as e:
        return failed(e)
    try:
        with AgentClient(address, timeout=settings.timeout or 30) as client:
            try:
                info = client.info()
            except AgentError as e:
                return failed(e)
            for art in artifacts:
                name = art.path.name
                try:
                    pushed = client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json(),
                                         progress=_push_progress(log, prefix, name))
                    if pushed["already_present"]:
                        log(f"{prefix} {name}: already on the device, nothing sent")
                    res = client.benchmark(art.manifest.sha256, settings.run_options(target), inputs=settings.inputs,
                                           on_event=_bench_progress(log, prefix, name),
                                           timeout=settings.timeout or None)
                    if res.get("incomplete"):
                        log(f"{prefix} {name}: the link broke mid-run ({res['incomplete']}); keeping the "
                            f"{len(res['samples'])} samples that arrived")
                    rec = benchmark_record(target, art, res, info, settings)
                    emulated = [f for f in rec["flags"] if f.startswith("emulated")]
                    if emulated:
                        log(f"{prefix} NOTE: {name} ran on an EMULATED CPU ({emulated[0]}): its latency proves "
                            "the pipeline correct, not the speed of the device")
                    rec["push"] = pushed
                    rec["id"] = store.add_benchmark(rec)
                    if dataset is not None:
                        from host.eval import evaluate  # heavy (torch/tf for the reference); only when asked

                        try:
                            rec["eval"] = evaluate(client, target, art, dataset, settings.data_limit, store, log=log,
                                                   options=settings.run_options(target))
                        except UserError as e:  # data that does not fit this artifact: keep its latency result
                            log(f"{prefix} {name}: eval error: {e}")
                            rec["eval"] = {"error": str(e)}
                    out.append(rec)
                except AgentError as e:
                    log(f"{prefix} {name}: error: {e}")
                    out.append({"target": target.name, "artifact": name, "sha256": art.manifest.sha256,
                                "error": str(e)})
    finally:
        transport.close()
    return out


def deploy(targets: list[Target], artifacts: list[Artifact], settings: RunSettings, store: ResultStore,
           log: Log = stderr_log) -> list[dict[str, Any]]:
    lock = threading.Lock()

    def safe_log(msg: str) -> None:
        with lock:
            log(msg)

    dataset = None
    if settings.data:  # loaded once, before anything is pushed: a bad --data fails at once
        from host.eval import load_eval_data

        dataset = load_eval_data(settings.data, settings.data_limit or None, settings.preprocess)
    if len(targets) == 1:
        return deploy_target(targets[0], artifacts, settings, store, safe_log, dataset)
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(deploy_target, t, artifacts, settings, store, safe_log, dataset) for t in targets]
        return [r for f in futures for r in f.result()]
