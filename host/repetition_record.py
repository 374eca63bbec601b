"""One stored benchmark record from the k repetitions of one artifact on one device.

The record keeps what a single run used to carry (runtime, phases, device state, flags, raw samples)
and adds the repetitions: each repetition's median, within-run CI, round and position in the
interleaved schedule, and where its samples lie in the pooled `samples` list (offset, n), so nothing
is stored twice. `latency_ms.p50` and `latency_ms.ci` are the between-run figures (host.stats);
`latency_ms.ci_within` is the CI of the median of all samples pooled, i.e. sampling noise only.
"""

from __future__ import annotations

from typing import Any

from agent.bench import median_ci, summarize
from host.artifacts import Artifact
from host.stats.repetitions import summarize_repetitions
from host.targets import Target

# per-repetition flags that say nothing once the repetitions are pooled (they are recomputed on the pool)
_PER_REP_ONLY = ("p99-from-", "fewer-runs-than-requested")


def _rep_entry(res: dict[str, Any], offset: int) -> dict[str, Any]:
    s, st = res["summary"], res["started"]
    return {"round": res["round"], "position": res["position"], "p50": s["p50"], "ci95": [s["ci_lo"], s["ci_hi"]],
            "ci_label": "95% CI" if s["runs"] >= 6 else "range", "runs": s["runs"], "duration_s": s["duration_s"],
            "stop_reason": s["stop_reason"], "import_ms": st.get("import_ms"), "load_ms": s["load_ms"],
            "first_ms": s["first_ms"], "warmup_ms": s["warmup_ms"], "warmup_runs": s["warmup_runs"],
            "peak_rss_mb": s["peak_rss_mb"], "flags": list(s["flags"]), "offset": offset, "n": len(res["samples"]),
            "incomplete": res.get("incomplete"), "t_start": res.get("t_start"), "t_end": res.get("t_end")}


def merge_flags(per_rep: list[list[str]]) -> list[str]:
    """One flag per kind across the repetitions: `busy(others used 1.5 cores)` from 3 of 5 repetitions
    reads `busy(others used 1.5 cores) in 3/5 reps` (the first one's detail), not three near-copies."""
    seen: dict[str, list[str]] = {}
    for flags in per_rep:
        for kind, flag in {f.split("(", 1)[0]: f for f in flags if not f.startswith(_PER_REP_ONLY)}.items():
            seen.setdefault(kind, []).append(flag)
    k = len(per_rep)
    return [v[0] if len(v) == k else f"{v[0]} in {len(v)}/{k} reps" for v in seen.values()]


def fed_inputs(summary: dict[str, Any], settings: Any) -> dict[str, Any]:
    """What the device was fed: random or the user's, and at which shapes. The agent reports it (older agents
    do not: then the user's tensors' shapes, or "unknown", never a guess)."""
    fed = (summary.get("describe_after") or {}).get("fed_inputs")
    if fed:
        return {"kind": "user" if fed.get("kind") == "user" else "random", "seed": None if settings.inputs else
                settings.seed, "shapes": fed.get("shapes") or {}, "dtypes": fed.get("dtypes") or {}}
    if settings.inputs:
        return {"kind": "user", "seed": None, "shapes": {k: list(v.shape) for k, v in settings.inputs.items()}}
    return {"kind": "random", "seed": settings.seed, "shapes": "unknown (agent too old to report them)"}


def repetition_record(target: Target, art: Artifact, reps: list[dict[str, Any]], info: dict[str, Any],
                      settings: Any, schedule: dict[str, Any], rep_errors: list[str]) -> dict[str, Any]:
    """`reps`: the Benchmark results of one artifact (each with "round" and "position"), in run order."""
    m = art.manifest
    first, last = reps[0], reps[-1]
    st = first["started"]
    samples: list[float] = []
    entries = []
    for res in reps:
        entries.append(_rep_entry(res, len(samples)))
        samples += list(res["samples"])
    pooled = summarize(samples)
    between = summarize_repetitions([e["p50"] for e in entries])
    within = median_ci(samples)
    flags = merge_flags([e["flags"] for e in entries])
    if 0 < len(samples) < 100:
        flags.append(f"p99-from-{len(samples)}-runs")
    if between["unstable"]:
        flags.append(between["unstable"])
    if rep_errors:
        flags.append(f"repetitions-failed({len(rep_errors)}/{len(reps) + len(rep_errors)})")
    k = len(entries)
    p50 = between["p50"] if k >= 2 else pooled["p50"]
    ci = between["ci"] if k >= 2 else [within[0], within[1]]
    ls = last["summary"]
    return {
        "target": target.name, "target_kind": target.kind, "device": {x: info.get(x) for x in (
            "hostname", "platform", "machine", "cpu_count", "mem_total_bytes", "agent_version", "facts")},
        "artifact": art.path.name, "sha256": m.sha256, "model_name": m.model_name, "platform": m.platform,
        "method": m.method, "precision": m.precision, "format": m.format, "size_bytes": m.size_bytes, "task": m.task,
        "runtime": {"name": st["runtime"], "version": st["runtime_version"]}, "delegate": st["delegate"],
        "threads": st["describe"].get("threads", settings.threads), "describe": st["describe"],
        "describe_after": ls.get("describe_after") or {},
        "runs": len(samples), "duration_s": sum(e["duration_s"] for e in entries),
        "stop_reason": ",".join(sorted({e["stop_reason"] for e in entries})),
        "latency_ms": {x: pooled[x] for x in ("p90", "p99", "mean", "std", "min", "max")} | {
            "p50": p50, "ci": ci, "ci_label": between["ci_label"] if k >= 2 else ("95% CI" if len(samples) >= 6
                                                                                 else "range"),
            "ci_level": between["ci_level"] if k >= 2 else None,
            "ci_within": [within[0], within[1]], "ci_within_label": "95% CI" if len(samples) >= 6 else "range",
            "ci95": [within[0], within[1]]},   # older readers: the within-run CI under its old name
        "repeats": k, "between": {x: between[x] for x in ("cv", "unstable", "rep_medians", "ci_level", "rerun")},
        "repetitions": entries, "schedule": schedule,
        "phases_ms": {"import": st.get("import_ms"), "load": first["summary"]["load_ms"],
                      "first": first["summary"]["first_ms"], "warmup": first["summary"]["warmup_ms"]},
        "warmup_runs": first["summary"]["warmup_runs"], "peak_rss_mb": max(e["peak_rss_mb"] for e in entries),
        "peak_rss_load_mb": max(r["summary"]["peak_rss_load_mb"] for r in reps),
        "env_before": st["env_before"], "env_after": ls["env_after"], "flags": flags,
        "settings": {x: v for x, v in settings.__dict__.items() if x not in ("data", "inputs", "preprocess")},
        "inputs": "user" if settings.inputs else f"random(seed={settings.seed})",
        "input": fed_inputs(ls, settings),
        "samples": samples, "incomplete": next((e["incomplete"] for e in entries if e["incomplete"]), None),
        "manifest": m.__dict__ | {"inputs": [t.__dict__ for t in m.inputs], "outputs": [t.__dict__ for t in m.outputs]},
    }
