"""Cross-device comparison of stored results: one row per device x model x platform x method.

For every row: latency p50/p90 with the between-run CI of the median (over the repetitions) and the
within-run CI beside it, the between-run coefficient of variation, speed-up vs the FP32 artifact of the
same model on the same device and runtime with the CI of the ratio from the paired, interleaved
repetitions (host.results.speedups), accuracy and its drop vs FP32 (percentage points), size, load
time, peak memory and the device-state flags the agent raised. `best_per_device` names the fastest
row whose accuracy drop is within the budget; `pareto_front` the rows no other row beats on both
latency and accuracy. Renderers: table, csv, json (here) and html (host.results.html_report).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any, Optional

from host import tasks
from host.results.speedups import compare
from host.stats.paired import MIN_EFFECT

__all__ = ["MIN_EFFECT", "build_report", "render", "SIGNIFICANCE_NOTE"]

SIGNIFICANCE_NOTE = (
    "speed-up = FP32 p50 / this p50 on the same device and runtime, with the CI of the ratio from the rounds both "
    "ran in one interleaved deploy; * = significant (the whole CI is beyond the device's noise floor, at least "
    f"{MIN_EFFECT:.0%}), ns = not significant (the CI includes 1 or reaches into the noise floor), no mark = one "
    "repetition on a side (no between-run information), ? = unreliable (repetitions disagree: unstable, or a median "
    "never settled: ci-not-reached); p50 CI = over the repetitions (between-run), within = one run's sampling "
    "noise only; a CI named 'range' is min..max, with its real level")


def _runtime_name(rec: dict[str, Any]) -> str:
    rt = rec.get("runtime")
    return rt.get("name", "") if isinstance(rt, dict) else str(rt or "")


def _runtime_version(rec: dict[str, Any]) -> str:
    rt = rec.get("runtime")
    return rt.get("version", "") if isinstance(rt, dict) else str(rec.get("runtime_version", ""))


def headline(task: str, metrics: dict[str, Any], agreement: Optional[dict[str, Any]] = None
             ) -> tuple[str, Optional[float]]:
    """The one accuracy number a row is compared on (fraction), and its name: the labelled metric, or for
    unlabelled data the agreement with the FP32 source (host.tasks)."""
    name, v = tasks.headline(task, metrics or {}, agreement or {})
    return name, (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)


def _latest(recs: list[dict[str, Any]], key) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for r in sorted(recs, key=lambda r: (r.get("created") or 0, r.get("id") or 0)):
        out[key(r)] = r
    return out


def build_rows(benchmarks: list[dict[str, Any]], evals: list[dict[str, Any]],
               noise_by_target: Optional[dict[str, dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Join the latest benchmark per (target, artifact, method, runtime, threads) with the latest
    eval of the same artifact and method on the same target; eval-only artifacts get rows without latency."""
    # the method is part of the key: two methods can give byte-identical files (TensorRT fp16 is an
    # engine flag on the same ONNX), which are still two rows of the comparison
    def art_key(r: dict[str, Any]) -> tuple:
        return r.get("target"), r.get("sha256"), r.get("method")

    # an eval joins the benchmark of the same runtime (a device with both LiteRT and tflite-runtime
    # gives two rows, each with its own accuracy); an eval that did not record its runtime joins any
    benches = _latest(benchmarks, lambda r: (*art_key(r), _runtime_name(r), r.get("threads")))
    ev_by = _latest(evals, lambda r: (*art_key(r), _runtime_name(r)))
    rows: list[dict[str, Any]] = []
    used = set()
    for b in benches.values():
        k = next((k for k in ((*art_key(b), _runtime_name(b)), (*art_key(b), "")) if k in ev_by), None)
        used.add(k)
        rows.append(_row(b, ev_by.get(k) if k else None))
    for k, e in ev_by.items():
        if k not in used:
            rows.append(_row(None, e))
    compare(rows, noise_by_target or {})
    rows.sort(key=lambda r: (r["target"], r["model_name"], r["platform"], r["method"] != "fp32", r["method"],
                             r["precision"]))
    return rows


def _row(b: Optional[dict[str, Any]], e: Optional[dict[str, Any]]) -> dict[str, Any]:
    src = b or e or {}
    man = src.get("manifest") or {}
    lat = (b or {}).get("latency_ms") or {}
    phases = (b or {}).get("phases_ms") or {}
    task = src.get("task") or man.get("task") or "classification"
    metric, acc = headline(task, (e or {}).get("metrics") or {}, (e or {}).get("agreement") or {})
    b_ = b or {}
    runs = b_.get("runs") or 0
    # a record from before repetitions (one run) has only the within-run CI, stored as ci95
    within = lat.get("ci_within") or lat.get("ci95") or [None, None]
    within_label = lat.get("ci_within_label") or ("95% CI" if runs >= 6 else "range")
    ci = lat.get("ci") or within
    sched = (b_.get("schedule") or {}).get("id", b_.get("id"))
    between = b_.get("between") or {}
    return {
        "target": src.get("target", ""), "target_kind": (b or {}).get("target_kind", ""),
        "model_name": src.get("model_name", ""), "platform": src.get("platform", ""),
        "method": src.get("method", ""), "precision": src.get("precision", ""),
        # int8 with layers kept float (host quantize --min-agreement/--max-drop/--keep-float): marked in tables
        "float_layers": len((man.get("engine") or {}).get("float_layers") or []) or None,
        "format": src.get("format") or man.get("format", ""), "artifact": src.get("artifact", ""),
        "sha256": src.get("sha256", ""), "task": task,
        "runtime": _runtime_name(b or e or {}),
        "runtime_version": _runtime_version(b or e or {}), "delegate": (b or {}).get("delegate", ""),
        "threads": (b or {}).get("threads"), "runs": (b or {}).get("runs"), "input": input_text(b or {}),
        "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"), "mean": lat.get("mean"),
        "ci_lo": ci[0], "ci_hi": ci[1], "ci_label": lat.get("ci_label") or within_label,
        "ci_within": within, "ci_within_label": within_label, "repeats": b_.get("repeats") or 1,
        "cv": between.get("cv"),
        "rep_rounds": {(sched, rep["round"]): rep["p50"] for rep in b_.get("repetitions") or []},
        "size_bytes": src.get("size_bytes") or man.get("size_bytes"),
        "load_ms": phases.get("load"), "first_ms": phases.get("first"), "peak_rss_mb": (b or {}).get("peak_rss_mb"),
        "flags": list(dict.fromkeys([*((b or {}).get("flags") or []), *((e or {}).get("flags") or [])])),
        "metric": metric, "accuracy": acc, "eval_n": (e or {}).get("n"), "dataset": (e or {}).get("dataset"),
        "agreement": (e or {}).get("agreement") or {},
        "samples": list((b or {}).get("samples") or []),
        "benchmark_id": (b or {}).get("id"), "eval_id": (e or {}).get("id"),
        # provenance (host deploy --label): which run and host made the latency figure
        "run_id": (src.get("run") or {}).get("id"), "label": (src.get("run") or {}).get("label"),
        "host": (src.get("run") or {}).get("host"),
        # filled by _compare
        "baseline": None, "speedup": None, "speedup_ci": None, "speedup_ci_lo": None, "speedup_ci_hi": None,
        "speedup_ci_label": "", "paired_rounds": 0,
        "significant": None, "unstable": False, "acc_drop": None, "acc_baseline": None, "noise_floor": None,
    }


def pareto_front(rows: list[dict[str, Any]]) -> list[int]:
    """Indices (into rows) not dominated on (lower p50, higher accuracy)."""
    pts = [(i, r["p50"], r["accuracy"]) for i, r in enumerate(rows)
           if r["p50"] is not None and r["accuracy"] is not None]
    front = []
    for i, lat, acc in pts:
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, l2, a2 in pts if j != i)
        if not dominated:
            front.append(i)
    return front


def best_per_device(rows: list[dict[str, Any]], max_drop: float) -> dict[str, dict[str, Any]]:
    """Per target (and model): the fastest row whose accuracy drop is known and <= max_drop points."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        # a small tolerance: 100 * (0.91 - 0.90) is 1.0000000000000009, still "within 1 pp"
        if r["p50"] is None or r["acc_drop"] is None or r["acc_drop"] > max_drop + 1e-9:
            continue
        key = f"{r['target']} / {r['model_name']}"
        if key not in best or r["p50"] < best[key]["p50"]:
            best[key] = r
    return best


# flags about the device's state during a run (agent/probes.py), not about the artifact or the statistics
DEVICE_STATE_FLAGS = ("freq-changed", "governor-changed", "temp-rose", "hot", "throttled", "power-mode-changed",
                      "gpu-freq-changed", "busy", "emulated")


def device_summary(benchmarks: list[dict[str, Any]],
                   noise: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, dict[str, Any]]:
    """Per target, what the device is and the state it was measured in: its facts from the latest
    run, and across all runs the governors seen, the temperature range and how many runs were flagged."""
    out: dict[str, dict[str, Any]] = {}
    for b in sorted(benchmarks, key=lambda r: (r.get("created") or 0, r.get("id") or 0)):
        dev = b.get("device") or {}
        facts = dev.get("facts") or {}
        d = out.setdefault(b.get("target", ""), {"governors": set(), "temps": [], "runs": 0, "flagged": 0})
        d.update({"hostname": dev.get("hostname"), "machine": dev.get("machine"), "cores": dev.get("cpu_count"),
                  "cpu_model": facts.get("cpu_model"), "board": facts.get("board") or facts.get("android", {}).get(
                      "ro.product.model"), "agent_version": dev.get("agent_version"),
                  "jetson_power_mode": facts.get("jetson_power_mode"), "emulated": facts.get("emulated")})
        d["runs"] += 1
        d["flagged"] += any(f.startswith(DEVICE_STATE_FLAGS) for f in b.get("flags") or [])
        for env in (b.get("env_before") or {}, b.get("env_after") or {}):
            if env.get("governor"):
                d["governors"].add(env["governor"])
            temps = list((env.get("temps_c") or {}).values())
            d["temps"] += [t for t in temps if isinstance(t, (int, float))]
    for d in out.values():
        d["governors"] = sorted(d["governors"])
        temps = d.pop("temps")
        d["temp_range_c"] = [min(temps), max(temps)] if temps else None
    for name, n in (noise or {}).items():
        if name in out:
            out[name]["noise"] = {k: n.get(k) for k in ("cv", "reference", "repeats", "created", "rep_medians")}
    return out


def device_line(name: str, d: dict[str, Any]) -> str:
    parts = [d.get("board") or d.get("cpu_model") or "?", f"{d.get('cores') or '?'} cores {d.get('machine') or ''}".strip()]
    if d.get("emulated"):
        parts.append(f"EMULATED ({d['emulated']}): latency proves correctness only")
    parts.append("governor " + (",".join(d["governors"]) if d["governors"] else "not exposed"))
    parts.append(f"{d['temp_range_c'][0]:.0f}-{d['temp_range_c'][1]:.0f} °C" if d["temp_range_c"]
                 else "no thermal zones")
    if d.get("jetson_power_mode"):
        parts.append(f"power mode {d['jetson_power_mode']}")
    parts.append(f"device state flagged in {d['flagged']}/{d['runs']} runs; agent {d.get('agent_version') or '?'}")
    n = d.get("noise")
    if n and n.get("cv") is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(n["created"])) if n.get("created") else "?"
        parts.append(f"noise floor {100 * n['cv']:.1f}% between runs of {n.get('reference') or 'the reference'} "
                     f"({n.get('repeats')} reps, {when})")
    else:
        parts.append(f"noise floor not measured (host noise --target {name}; {MIN_EFFECT:.0%} assumed)")
    return f"{name}: " + "; ".join(parts)


def front_key(r: dict[str, Any]) -> str:
    return f"{r['target']} / {r['model_name']}"


def build_report(store: Any, target: Optional[list[str]] = None, model: Optional[list[str]] = None,
                 max_drop: float = 1.0, sha256: Optional[set[str]] = None,
                 label: Optional[str] = None) -> dict[str, Any]:
    """Rows, best choice per device and Pareto fronts; `sha256` keeps only those artifacts, `label` only the
    results of runs with that label (host deploy --label)."""
    benches = store.benchmarks(target=target, model=model, **({"label": label} if label else {}))
    evals = store.evals(target=target, model=model, **({"label": label} if label else {}))
    if sha256 is not None:
        benches = [b for b in benches if b.get("sha256") in sha256]
        evals = [e for e in evals if e.get("sha256") in sha256]
    noise = latest_noise(store, target)
    rows = build_rows(benches, evals, noise)
    best = best_per_device(rows, max_drop)
    # one front per device and model: a detector's mAP and a classifier's top-1 share no axis
    fronts: dict[str, list[int]] = {}
    for key in sorted({front_key(r) for r in rows}):
        idx = [i for i, r in enumerate(rows) if front_key(r) == key]
        fronts[key] = [idx[k] for k in pareto_front([rows[i] for i in idx])]
    for i, r in enumerate(rows):
        r["pareto"] = any(i in f for f in fronts.values())
    return {"rows": rows, "best": {k: _brief(v) for k, v in best.items()}, "max_drop": max_drop,
            "pareto": fronts, "devices": device_summary(benches, noise)}


def latest_noise(store: Any, target: Optional[list[str]] = None) -> dict[str, dict[str, Any]]:
    """The latest noise-floor measurement per target (host noise); stores without the table give none."""
    if not hasattr(store, "noise"):
        return {}
    return _latest(store.noise(target), lambda r: r.get("target"))


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("target", "model_name", "platform", "method", "precision", "float_layers", "runtime",
                              "artifact",
                              "p50", "speedup", "accuracy", "acc_drop", "size_bytes")}


def input_text(b: dict[str, Any]) -> str:
    """What the device was timed on: 'random 1x3x640x640' or 'user 1x3x224x224' (several inputs joined by
    '+'); records from before inputs were recorded say only random/user, never a guessed shape."""
    fed = b.get("input") or {}
    shapes = fed.get("shapes")
    kind = fed.get("kind") or ("user" if b.get("inputs") == "user" else "random" if b.get("inputs") else "")
    if isinstance(shapes, dict) and shapes:
        return f"{kind} " + "+".join("x".join(map(str, s)) for s in shapes.values())
    return kind or "-"


# ------------------------------------------------------------------ renderers

COLUMNS = ("target", "model_name", "platform", "method", "precision", "float_layers", "runtime", "runtime_version",
           "delegate", "threads", "input", "repeats", "runs", "p50", "p90", "p99", "ci_lo", "ci_hi", "ci_label", "cv", "speedup",
           "speedup_ci_lo", "speedup_ci_hi", "significant", "unstable", "noise_floor", "acc_baseline", "metric",
           "accuracy", "acc_drop", "size_bytes", "load_ms", "first_ms", "peak_rss_mb", "flags",
           "pareto", "artifact", "sha256")


def _f(v: Any, spec: str, dash: str = "-") -> str:
    return dash if v is None else format(v, spec)


def speedup_text(r: dict[str, Any]) -> str:
    if r["speedup"] is None:
        return "-"
    if r["method"] == "fp32" and r["baseline"] == r["artifact"]:
        return "1.00x (ref)" + (" ?" if r.get("unstable") else "")
    mark = " ?" if r.get("unstable") else {True: " *", False: " ns", None: ""}[r["significant"]]
    ci = r.get("speedup_ci")
    ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{r['speedup']:.2f}x{ci_text}{mark}"


def method_text(r: dict[str, Any]) -> str:
    """'static/int8', or 'static/mixed (3 float)' for an int8 artifact with layers kept float."""
    n = r.get("float_layers")
    return f"{r['method']}/{r['precision']}" + (f" ({n} float)" if n else "")


def _ci_text(lo: Any, hi: Any, label: str) -> str:
    if lo is None or hi is None:
        return "-"
    return f"[{lo:.4g}, {hi:.4g}] {label}"


def table_rows(rep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["target", "model", "platform", "method", "runtime", "threads", "input", "reps", "p50 ms", "p50 CI (between runs)",
              "within-run CI", "cv", "p90 ms", "speed-up [CI]", "accuracy", "drop pp", "size KiB", "load ms",
              "peak MB", "flags"]
    out = []
    for r in rep["rows"]:
        acc = f"{r['metric']} {100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        drop = _f(r["acc_drop"], "+.2f") + (f" (vs {r['acc_baseline']})" if r.get("acc_baseline") else "")
        timed = r["p50"] is not None
        between = _ci_text(r["ci_lo"], r["ci_hi"], r["ci_label"]) if timed and r["repeats"] >= 2 else (
            "- (1 run)" if timed else "-")
        within = r["ci_within"] or [None, None]
        out.append([r["target"], r["model_name"], r["platform"], method_text(r),
                    f"{r['runtime']} {r['runtime_version']}".strip() or "-",
                    "-" if r["threads"] is None else str(r["threads"] or "default"), r["input"],
                    str(r["repeats"]) if timed else "-",
                    _f(r["p50"], ".4g"), between, _ci_text(within[0], within[1], r["ci_within_label"]),
                    _f(None if r["cv"] is None else 100 * r["cv"], ".1f") + ("%" if r["cv"] is not None else ""),
                    _f(r["p90"], ".4g"), speedup_text(r), acc, drop,
                    _f(None if r["size_bytes"] is None else r["size_bytes"] / 1024, ".1f"),
                    _f(r["load_ms"], ".1f"), _f(r["peak_rss_mb"], ".0f"), ",".join(r["flags"]) or "-"])
    return header, out


def render_table(rep: dict[str, Any]) -> str:
    header, rows = table_rows(rep)
    cells = [header] + rows
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(SIGNIFICANCE_NOTE + "; drop = FP32 accuracy minus this, in percentage points")
    for name, d in sorted((rep.get("devices") or {}).items()):
        lines.append("device " + device_line(name, d))
    if rep["best"]:
        for k, b in rep["best"].items():
            lines.append(f"best within {rep['max_drop']:g} pp on {k}: {b['platform']} {b['method']} "
                         f"({b['runtime']}) p50 {b['p50']:.3f} ms, {speedup_text_brief(b)}, drop {b['acc_drop']:+.2f} pp")
    else:
        lines.append(f"no row is within the accuracy budget of {rep['max_drop']:g} pp (evaluate with host eval)")
    return "\n".join(lines)


def speedup_text_brief(b: dict[str, Any]) -> str:
    return "speed-up -" if b["speedup"] is None else f"speed-up {b['speedup']:.2f}x"


def render_csv(rep: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rep["rows"]:
        w.writerow(["|".join(r[c]) if c == "flags" else ("" if r.get(c) is None else r[c]) for c in COLUMNS])
    return buf.getvalue()


def render_json(rep: dict[str, Any]) -> str:
    rows = [{c: r.get(c) for c in COLUMNS} | {"agreement": r["agreement"], "eval_n": r["eval_n"],
                                              "dataset": r["dataset"], "n_samples": len(r["samples"]),
                                              "ci_within": r["ci_within"], "ci_within_label": r["ci_within_label"],
                                              "speedup_ci_label": r["speedup_ci_label"],
                                              "paired_rounds": r["paired_rounds"], "baseline": r["baseline"]}
            for r in rep["rows"]]
    return json.dumps({"rows": rows, "best": rep["best"], "max_drop": rep["max_drop"],
                       "devices": rep.get("devices", {})}, indent=2, default=str)


def render(rep: dict[str, Any], fmt: str) -> str:
    if fmt == "table":
        return render_table(rep)
    if fmt == "csv":
        return render_csv(rep)
    if fmt == "json":
        return render_json(rep)
    if fmt == "html":
        from host.results.html_report import render_html

        return render_html(rep)
    raise ValueError(f"unknown format {fmt!r}")
