"""A device's own noise floor: the between-run variation of a fixed reference workload.

The same small CNN (host/reference/, built by make_reference.py) runs in k repetitions, each in a fresh
worker with the deploy's per-repetition budget; the coefficient of variation of the repetition medians
is the floor below which a speed-up on this device is not called (host.results.speedups). It is stored
with the device's state before and after, and the report shows it per device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from host.client import AgentClient, AgentError
from host.deploy import RunSettings
from host.errors import UserError
from host.repetition_record import merge_flags
from host.results.store import ResultStore
from host.stats.repetitions import summarize_repetitions
from host.targets import Target
from host.transports import open_transport

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# the first format the device can run wins: LiteRT is on most edge devices, ONNX Runtime on the rest
REFERENCES = (("tflite", "noise_reference.tflite"), ("onnx", "noise_reference.onnx"))


def pick_reference(runtimes: list[dict[str, Any]]) -> tuple[str, Path]:
    formats = {f for r in runtimes if r.get("available") for f in r.get("formats") or []}
    for fmt, name in REFERENCES:
        if fmt in formats:
            return fmt, REFERENCE_DIR / name
    raise UserError(f"the device runs none of the reference formats ({', '.join(f for f, _ in REFERENCES)}); "
                    "install the tflite or onnx extra on it")


def measure_noise(target: Target, settings: RunSettings, store: ResultStore,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Run the reference `settings.repeats` times on the device; store and return the noise record."""
    transport = open_transport(target)
    try:
        address = transport.connect(lambda m: log(f"[{target.name}] {m}"))
        with AgentClient(address, timeout=settings.timeout or 30) as client:
            info = client.info()
            fmt, path = pick_reference(info["runtimes"])
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            client.push(path, sha, fmt)
            reps = []
            for i in range(settings.repeats):
                res = client.benchmark(sha, settings.run_options(target), timeout=settings.timeout or None)
                s = res["summary"]
                log(f"[{target.name}] reference #{i + 1}/{settings.repeats}: p50 {s['p50']:.4f} ms "
                    f"({s['runs']} runs, within-run CI [{s['ci_lo']:.4f}, {s['ci_hi']:.4f}])")
                reps.append(res)
    except AgentError as e:
        raise UserError(f"noise measurement on {target.name} failed: {e}") from e
    finally:
        transport.close()
    between = summarize_repetitions([r["summary"]["p50"] for r in reps])
    started = reps[0]["started"]
    rec = {"target": target.name, "reference": f"{path.name} ({started['runtime']} {started['runtime_version']})",
           "sha256": sha, "format": fmt, "threads": started["describe"].get("threads"), "repeats": len(reps),
           "cv": between["cv"], "p50": between["p50"], "ci": between["ci"], "ci_label": between["ci_label"],
           "rep_medians": between["rep_medians"],
           "rep_within_ci": [[r["summary"]["ci_lo"], r["summary"]["ci_hi"]] for r in reps],
           "flags": merge_flags([r["summary"]["flags"] for r in reps]),
           "device": {k: info.get(k) for k in ("hostname", "machine", "cpu_count", "agent_version", "facts")},
           "env_before": started["env_before"], "env_after": reps[-1]["summary"]["env_after"],
           "settings": {k: v for k, v in settings.__dict__.items() if k not in ("data", "inputs", "preprocess")}}
    rec["id"] = store.add_noise(rec)
    return rec
