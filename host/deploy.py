"""Deploy orchestration: targets x artifacts -> pushed, benchmarked, stored results.

Targets run concurrently (one thread each); on one target the artifacts run one after another, so
a device never measures two models at once. Each artifact is measured in k repetitions (each in a
fresh worker on the device), and a target's repetitions are interleaved across its artifacts in a
seeded random order (host.schedule) so drift hits all of them alike. Whatever a target did before
failing is kept.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from host.artifacts import Artifact
from host.client import AgentClient, AgentError
from host.errors import UserError
from host.quiet import user_err
from host.repetition_record import repetition_record
from host.results.store import ResultStore
from host.schedule import interleaved_order
from host.targets import Target
from host.transports import open_transport

Log = Callable[[str], None]


@dataclass
class RunSettings:
    threads: Optional[int] = None        # None = target's default, else 1; 0 = the runtime's own default
    # k independent repetitions per artifact, each a fresh worker process with its own load, warm-up and
    # steady state; the budget below is per repetition. Defaults: the single run (1 s steady, 0.2 s warm-up,
    # 50 runs, at most 20 s) that deploys used to make, traded for 5 short ones: variation between processes
    # is what the CI must carry and one long run cannot see it. Each repetition pays a process start
    # (0.3-0.5 s on a busy 2-core machine: python + numpy + runtime import), so its steady and warm-up phases
    # are short and its early-stopping target looser (the between-run spread, not one run's sampling noise,
    # sets the final CI) to keep a default deploy near 1.5x the old one (bench/rerun_bench.py); the worst
    # case (4 s x 5) is the old 20 s cap.
    repeats: int = 5
    runs: int = 10
    min_seconds: float = 0.03
    max_seconds: float = 4.0
    warmup_runs: int = 5
    warmup_seconds: float = 0.02
    target_ci: float = 0.02
    schedule_seed: int = 0               # seed of the interleaved order of repetitions (host.schedule)
    runtime: str = ""
    runtime_options: dict[str, str] = field(default_factory=dict)
    timeout: float = 0.0                 # per call; 0 = derived from max_seconds
    data: Optional[str] = None           # also evaluate accuracy on this dataset
    data_limit: int = 1000
    preprocess: Optional[str] = None     # image-folder preprocessing for `data` (Preprocess.parse)
    seed: int = 0
    inputs: Optional[dict[str, Any]] = None   # user tensors instead of random inputs
    profile: bool = False                # after the measurement, a separate per-op profiled run (host.profile)
    profile_runs: int = 10

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
    print(msg, file=user_err(), flush=True)


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


def deploy_target(target: Target, artifacts: list[Artifact], settings: RunSettings, store: ResultStore,
                  log: Log = stderr_log, dataset: Any = None, lab: Any = None) -> list[dict[str, Any]]:
    """Push every artifact, then run their repetitions interleaved (host.schedule), then store one record
    per artifact (host.repetition_record) and evaluate accuracy once per artifact when asked. With `lab`
    (host.lab.LabSettings) all of it happens under a lease on the device, taken in the lab's queue."""
    if lab is None:
        return _deploy_target(target, artifacts, settings, store, log, dataset, None)
    from host.lab import Lease, LeaseError

    prefix = f"[{target.name}]"
    try:
        lease = Lease(lab, target.name, target.kind, target.transport, lambda m: log(f"{prefix} {m}")).acquire()
    except LeaseError as e:
        log(f"{prefix} error: {e}")
        return [error_row(target, a, str(e)) for a in artifacts]
    if lease.waited_s >= 1:
        log(f"{prefix} lease granted after {lease.waited_s:.1f} s in the queue")
    try:
        return _deploy_target(target, artifacts, settings, store, log, dataset, lease)
    finally:
        lease.release()


def _deploy_target(target: Target, artifacts: list[Artifact], settings: RunSettings, store: ResultStore,
                   log: Log, dataset: Any, lease: Any) -> list[dict[str, Any]]:
    prefix = f"[{target.name}]"

    def failed(e: Exception) -> list[dict[str, Any]]:
        # an unreachable device fails its own rows; the other targets of the deploy carry on
        log(f"{prefix} error: {e}")
        return [error_row(target, a, str(e)) for a in artifacts]

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
            return _run_target(client, target, artifacts, settings, store, info, log, prefix, dataset, lease)
    finally:
        transport.close()


def error_row(target: Target, art: Artifact, err: str) -> dict[str, Any]:
    return {"target": target.name, "artifact": art.path.name, "sha256": art.manifest.sha256, "error": err}


def _run_target(client: AgentClient, target: Target, artifacts: list[Artifact], settings: RunSettings,
                store: ResultStore, info: dict[str, Any], log: Log, prefix: str, dataset: Any,
                lease: Any = None) -> list[dict[str, Any]]:
    errors: dict[int, str] = {}
    pushes: dict[int, dict[str, Any]] = {}
    for i, art in enumerate(artifacts):
        name = art.path.name
        try:
            pushes[i] = client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json(),
                                    progress=_push_progress(log, prefix, name))
            if pushes[i]["already_present"]:
                log(f"{prefix} {name}: already on the device, nothing sent")
        except AgentError as e:
            log(f"{prefix} {name}: error: {e}")
            errors[i] = str(e)
    ok = [i for i in range(len(artifacts)) if i not in errors]
    k = max(1, settings.repeats)
    order = [(r, ok[j]) for r, j in interleaved_order(len(ok), k, settings.schedule_seed)]
    schedule = {"id": uuid.uuid4().hex[:12], "seed": settings.schedule_seed, "repeats": k,
                "order": [[r, artifacts[i].path.name] for r, i in order]}
    if len(ok) > 1 and k > 1:
        log(f"{prefix} {k} repetitions of {len(ok)} artifacts, interleaved (seed {settings.schedule_seed}): "
            + " ".join(f"{artifacts[i].path.name}#{r + 1}" for r, i in order[: 2 * len(ok)])
            + (" ..." if len(order) > 2 * len(ok) else ""))
    reps: dict[int, list[dict[str, Any]]] = {i: [] for i in ok}
    rep_errors: dict[int, list[str]] = {i: [] for i in ok}
    for pos, (r, i) in enumerate(order):
        art = artifacts[i]
        name = art.path.name
        t_start = time.time()   # wall-clock span of the repetition: the lab checks runs never overlap on a device
        try:
            res = client.benchmark(art.manifest.sha256, settings.run_options(target), inputs=settings.inputs,
                                   on_event=_bench_progress(log, prefix, f"{name} #{r + 1}/{k}"),
                                   timeout=settings.timeout or None)
        except AgentError as e:
            log(f"{prefix} {name} #{r + 1}/{k}: error: {e}")
            rep_errors[i].append(str(e))
            continue
        if res.get("incomplete"):
            log(f"{prefix} {name}: the link broke mid-run ({res['incomplete']}); keeping the "
                f"{len(res['samples'])} samples that arrived")
        reps[i].append(res | {"round": r, "position": pos, "t_start": t_start, "t_end": time.time()})
    out: list[dict[str, Any]] = []
    for i, art in enumerate(artifacts):
        if i in errors or not reps.get(i):
            out.append(error_row(target, art, errors.get(i) or "; ".join(rep_errors.get(i) or ["no repetition ran"])))
            continue
        rec = repetition_record(target, art, reps[i], info, settings, schedule, rep_errors[i])
        rec["flags"] += stand_in_flags(art.manifest, rec["runtime"]["name"])
        emulated = [f for f in rec["flags"] if f.startswith("emulated")]
        if emulated:
            log(f"{prefix} NOTE: {art.path.name} ran on an EMULATED CPU ({emulated[0]}): its latency proves "
                "the pipeline correct, not the speed of the device")
        rec["push"] = pushes[i]
        if lease is not None:
            rec["lease"] = lease.info()
            if lease.lost:   # the device may have been shared with another host for part of this run
                rec["flags"].append("lease-lost")
        rec["id"] = store.add_benchmark(rec)
        if settings.profile:  # its own run after every repetition: profiling perturbs timing
            from host.profile import profile_artifact

            try:
                rec["profile"] = profile_artifact(client, target, art, settings.run_options(target),
                                                  settings.profile_runs, store, log, settings.inputs,
                                                  settings.timeout or None, benchmark=rec)
            except AgentError as e:
                log(f"{prefix} {art.path.name}: profile error: {e}")
                rec["profile"] = {"status": f"error: {e}", "ops": [], "flags": []}
        if dataset:
            from host.eval import evaluate  # heavy (torch/tf for the reference); only when asked

            try:
                rec["eval"] = evaluate(client, target, art, dataset[art.manifest.sha256], settings.data_limit, store,
                                       log=log,
                                       options=settings.run_options(target))
            except UserError as e:  # data that does not fit this artifact: keep its latency result
                log(f"{prefix} {art.path.name}: eval error: {e}")
                rec["eval"] = {"error": str(e)}
        out.append(rec)
    return out


def deploy(targets: list[Target], artifacts: list[Artifact], settings: RunSettings, store: ResultStore,
           log: Log = stderr_log, lab: Any = None) -> list[dict[str, Any]]:
    lock = threading.Lock()

    def safe_log(msg: str) -> None:
        with lock:
            log(msg)

    dataset: dict[str, Any] = {}   # artifact sha256 -> its eval data
    if settings.data:  # loaded once, before anything is pushed: a bad --data fails at once
        from pathlib import Path

        from host.eval import load_eval_data

        # an image folder without --preprocess: each artifact's data is preprocessed as its manifest recorded
        # (loaded once per distinct recording); otherwise one data set for all
        by_pp: dict[str, Any] = {}
        folder = Path(settings.data).is_dir() and not settings.preprocess
        for art in artifacts:
            rec = art.manifest.preprocessing if folder else None
            key = json.dumps(rec, sort_keys=True, default=str)
            if key not in by_pp:
                by_pp[key] = load_eval_data(settings.data, settings.data_limit or None, settings.preprocess, rec)
            dataset[art.manifest.sha256] = by_pp[key]
    if len(targets) == 1:
        return deploy_target(targets[0], artifacts, settings, store, safe_log, dataset, lab)
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(deploy_target, t, artifacts, settings, store, safe_log, dataset, lab) for t in targets]
        return [r for f in futures for r in f.result()]
