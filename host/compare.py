"""The regression gate: a candidate label's stored results against a baseline label's, for CI.

Rows pair by what a user means by "the same thing on the same device": target, model, platform, method,
precision, runtime and threads (not the file's sha256: a new commit makes a new file). For each pair:

* latency: the ratio candidate / baseline of the medians, estimated as the Hodges-Lehmann shift of the
  log repetition medians (host.stats.hodges_lehmann), each repetition median recomputed from the stored
  raw samples, all runs of a label pooled; its CI is exact-level and distribution-free. Repetitions, not
  raw samples, are the unit: samples within one process are correlated and miss what differs between
  processes, so a CI over them calls every rerun "significant". A side with a single repetition falls back
  to its raw samples and says so (`within-run only`).
* accuracy: the headline metric (host.tasks) of the latest eval per side, its change in percentage points.

Verdicts: `slower` (fails the gate) when the whole CI lies above 1 and the estimate exceeds --max-slowdown;
`slower (ns)` when past the threshold but not significant; `faster` when the whole CI is below 1;
`accuracy-drop` (fails) past --max-drop; `missing` when only one side has the row.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from host.results.report import headline
from host.stats.hodges_lehmann import ratio_ci


def _runtime(rec: dict[str, Any]) -> str:
    rt = rec.get("runtime")
    return rt.get("name", "") if isinstance(rt, dict) else str(rt or "")


def row_key(rec: dict[str, Any]) -> tuple:
    return (rec.get("target", ""), rec.get("model_name", ""), rec.get("platform", ""), rec.get("method", ""),
            rec.get("precision", ""), _runtime(rec), rec.get("threads"))


KEY_NAMES = ("target", "model_name", "platform", "method", "precision", "runtime", "threads")


def repetition_medians(rec: dict[str, Any]) -> tuple[list[float], bool]:
    """Each repetition's median from the raw samples (offset/n into `samples`); a record from before
    repetitions is one repetition. Returns (medians, from_raw_samples)."""
    samples = np.asarray(rec.get("samples") or [], dtype=np.float64)
    reps = rec.get("repetitions") or []
    if samples.size and reps and all("offset" in r and "n" in r for r in reps):
        out = [float(np.median(samples[r["offset"]:r["offset"] + r["n"]])) for r in reps if r["n"] > 0]
        return out, True
    if samples.size:
        return [float(np.median(samples))], True
    p50 = (rec.get("latency_ms") or {}).get("p50")
    return ([float(p50)] if p50 else []), False


def _side(benches: list[dict[str, Any]]) -> dict[str, Any]:
    meds: list[float] = []
    samples: list[float] = []
    runs = set()
    for b in benches:
        m, _ = repetition_medians(b)
        meds += m
        samples += list(b.get("samples") or [])
        runs.add((b.get("run") or {}).get("id") or b.get("id"))
    return {"rep_medians": meds, "samples": samples, "runs": len(runs),
            "p50": float(np.median(meds)) if meds else None, "records": [b.get("id") for b in benches]}


def _acc(evals: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if not evals:
        return None
    e = max(evals, key=lambda r: (r.get("created") or 0, r.get("id") or 0))
    metric, value = headline(e.get("task") or "classification", e.get("metrics") or {}, e.get("agreement") or {})
    return {"metric": metric, "value": value, "n": e.get("n"), "dataset": e.get("dataset")}


def compare_labels(base_b: list[dict[str, Any]], cand_b: list[dict[str, Any]], base_e: list[dict[str, Any]],
                   cand_e: list[dict[str, Any]], max_slowdown_pct: float, max_drop_pp: float,
                   conf: float = 0.95) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[str, list]] = {}
    for side, recs in (("bb", base_b), ("cb", cand_b)):
        for r in recs:
            if r.get("error") or not (r.get("samples") or (r.get("latency_ms") or {}).get("p50")):
                continue
            groups.setdefault(row_key(r), {"bb": [], "cb": [], "be": [], "ce": []})[side].append(r)
    # an eval pairs with the benchmark rows of its artifact's key (evals carry no threads: match the rest)
    for side, recs in (("be", base_e), ("ce", cand_e)):
        for e in recs:
            k = row_key(e)[:6]
            for key, g in groups.items():
                if key[:6] == k or (key[:5] == k[:5] and not k[5]):
                    g[side].append(e)
    rows = []
    thr = 1.0 + max_slowdown_pct / 100.0
    for key, g in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        row: dict[str, Any] = dict(zip(KEY_NAMES, key))
        b, c = _side(g["bb"]), _side(g["cb"])
        row.update(baseline_p50=b["p50"], candidate_p50=c["p50"], baseline_reps=len(b["rep_medians"]),
                   candidate_reps=len(c["rep_medians"]), baseline_runs=b["runs"], candidate_runs=c["runs"],
                   baseline_records=b["records"], candidate_records=c["records"], ratio=None, ci=None,
                   ci_level=None, ci_label="", basis="", significant=None, verdict="ok", fails=False)
        if not g["bb"] or not g["cb"]:
            row["verdict"] = "missing in " + ("candidate" if g["bb"] else "baseline")
        else:
            within = min(len(b["rep_medians"]), len(c["rep_medians"])) < 2
            s = ratio_ci(c["samples"], b["samples"], conf) if within else ratio_ci(c["rep_medians"],
                                                                                     b["rep_medians"], conf)
            if s is not None:
                row.update(ratio=s.estimate, ci=[s.lo, s.hi], ci_level=s.level, ci_label=s.label,
                           basis="within-run only (a side has 1 repetition)" if within else
                           f"{s.n} vs {s.m} repetition medians")
                row["significant"] = bool(s.lo > 1.0 or s.hi < 1.0)
                if s.lo > 1.0 and s.estimate > thr:
                    row.update(verdict="slower", fails=True)
                elif s.estimate > thr:
                    row["verdict"] = "slower (ns)"
                elif s.hi < 1.0:
                    row["verdict"] = "faster"
        ab, ac = _acc(g["be"]), _acc(g["ce"])
        row.update(metric=(ac or ab or {}).get("metric"), baseline_acc=(ab or {}).get("value"),
                   candidate_acc=(ac or {}).get("value"), acc_change_pp=None)
        if ab and ac and ab["value"] is not None and ac["value"] is not None:
            if (ab["dataset"], ab["n"]) != (ac["dataset"], ac["n"]):
                row["acc_note"] = (f"not compared: evaluated on {ab['dataset']} n={ab['n']} vs "
                                   f"{ac['dataset']} n={ac['n']}")
            else:
                change = 100.0 * (ac["value"] - ab["value"])
                row["acc_change_pp"] = change
                if -change > max_drop_pp + 1e-9:
                    row["fails"] = True
                    row["verdict"] = "accuracy-drop" if row["verdict"] in ("ok", "faster", "slower (ns)") \
                        else row["verdict"] + "+accuracy-drop"
        rows.append(row)
    return rows


def gate(store: Any, baseline: str, candidate: str, targets: Optional[list[str]] = None,
         models: Optional[list[str]] = None, max_slowdown_pct: float = 5.0, max_drop_pp: float = 0.5,
         conf: float = 0.95) -> dict[str, Any]:
    def get(kind: str, label: str) -> list[dict[str, Any]]:
        return getattr(store, kind)(target=targets, model=models, label=label)

    rows = compare_labels(get("benchmarks", baseline), get("benchmarks", candidate), get("evals", baseline),
                          get("evals", candidate), max_slowdown_pct, max_drop_pp, conf)
    failing = [r for r in rows if r["fails"]]
    return {"baseline": baseline, "candidate": candidate, "max_slowdown_pct": max_slowdown_pct,
            "max_drop_pp": max_drop_pp, "confidence": conf, "rows": rows, "regressions": len(failing),
            "passed": not failing,
            "baseline_runs": _runs(store, baseline), "candidate_runs": _runs(store, candidate)}


def _runs(store: Any, label: str) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("id", "host", "user", "started", "status", "versions")} for r in store.runs(label)]


def pct(x: Optional[float]) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{(x - 1) * 100:+.1f}%"
