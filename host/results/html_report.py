"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external links).

Sections: the best choice per device for the accuracy budget, the comparison table, and per device
a latency-distribution plot and an accuracy-vs-latency plot with the Pareto front, then artifact
size by method.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from host.results import svg
from host.results.report import SIGNIFICANCE_NOTE, device_line, front_key, table_rows

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px} th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4} td:nth-child(-n+5){text-align:left} tr.best td{background:#fff6d5}
tr.pareto td:first-child{border-left:3px solid #444}
.plots{display:flex;flex-wrap:wrap;gap:16px} .note{color:#666;font-size:12px}
.best-list li{margin:4px 0} .flag{color:#b00}
"""


# table cells a reader (and the report test) can find by class: the two CIs kept side by side
_CELL_CLASS = {"p50 CI (between runs)": "ci-between", "within-run CI": "ci-within", "speed-up [CI]": "speedup"}


def _label(r: dict[str, Any], with_model: bool = True) -> str:
    """A plot label that tells rows apart: model, platform/method (a ready file's precision, as its method is
    unknown), runtime, threads ("tflite/unknown (litert)" four times named four different models)."""
    method = r["method"] if r.get("method") not in (None, "", "unknown") else (r.get("precision") or "as given")
    method += f" +{r['float_layers']} float" if r.get("float_layers") else ""
    extra = ", ".join(x for x in (r.get("runtime") or "", f"{r['threads']} thr" if r.get("threads") else "") if x)
    return ((f"{r['model_name']}: " if with_model and r.get("model_name") else "") + f"{r['platform']}/{method}"
            + (f" ({extra})" if extra else ""))


def render_html(rep: dict[str, Any]) -> str:
    rows = rep["rows"]
    best_ids = {(b["target"], b["artifact"], b["runtime"]) for b in rep["best"].values()}
    targets = sorted({r["target"] for r in rows})
    platforms = sorted({r["platform"] for r in rows})
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>edgebench report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>edgebench: accuracy vs latency per device</h1>",
             f'<p class="note">generated {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}; '
             f"{len(rows)} rows on {len(targets)} device(s); accuracy budget {rep['max_drop']:g} percentage points; "
             f"{escape(SIGNIFICANCE_NOTE)}.</p>"]
    parts.append('<h2>Best choice per device</h2><ul class="best-list" id="best">')
    if rep["best"]:
        for key, b in rep["best"].items():
            acc = f"{100 * b['accuracy']:.2f}%" if b["accuracy"] is not None else "not evaluated"
            sp = f"{b['speedup']:.2f}x vs FP32" if b["speedup"] is not None else "no FP32 reference"
            parts.append(f'<li data-target="{escape(b["target"])}"><b>{escape(key)}</b>: '
                         f"{escape(b['platform'])} / {escape(b['method'])} ({escape(b['precision'])}, "
                         f"{escape(b['runtime'])}) — p50 {b['p50']:.3f} ms, {sp}, accuracy {acc}, "
                         f"drop {b['acc_drop']:+.2f} pp, {escape(b['artifact'])}</li>")
    else:
        parts.append(f"<li>no result is within the {rep['max_drop']:g} pp budget (run host eval)</li>")
    parts.append("</ul>")

    header, trows = table_rows(rep)
    parts.append('<h2>All results</h2><table id="results"><thead><tr>' +
                 "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for r, cells in zip(rows, trows):
        cls = " ".join(c for c, on in (("best", (r["target"], r["artifact"], r["runtime"]) in best_ids),
                                       ("pareto", r.get("pareto"))) if on)
        tds = []
        for h, c in zip(header, cells):
            klass = ' class="flag"' if h == "flags" and c != "-" else (
                f' class="{_CELL_CLASS[h]}"' if h in _CELL_CLASS else "")
            tds.append(f"<td{klass}>{escape(c)}</td>")
        parts.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    parts.append("</tbody></table>")
    parts.append('<p class="note">left bar = on the Pareto front of its device; highlighted = best within budget. '
                 "Flags are the agent's device-state warnings (frequency changed, hot, busy, ...).</p>")

    for t in targets:
        trs = [(i, r) for i, r in enumerate(rows) if r["target"] == t]
        parts.append(f'<h2 id="device-{escape(t)}">Device {escape(t)}</h2>')
        if t in (rep.get("devices") or {}):
            parts.append(f'<p class="device-state">{escape(device_line(t, rep["devices"][t]))}</p>')
        parts.append('<div class="plots">')
        timed = [r for _, r in trs if r["p50"] is not None]
        series = [(_label(r), r["samples"] or [r["p50"]]) for r in timed]
        parts.append(svg.boxplot(f"{t}: steady-state latency (box p25-p75, whiskers p1-p99)", series,
                                 groups=[r["platform"] for r in timed], group_order=platforms))
        for model in sorted({r["model_name"] for _, r in trs}):  # one accuracy axis per model
            mrs = [(i, r) for i, r in trs if r["model_name"] == model]
            pts, index = [], {}
            for i, r in mrs:
                if r["p50"] is not None and r["accuracy"] is not None:
                    index[i] = len(pts)
                    pts.append({"x": r["p50"], "y": 100 * r["accuracy"], "label": _label(r, with_model=False), "group": r["platform"]})
            if not pts:
                continue
            front = [index[i] for i in rep["pareto"].get(front_key(mrs[0][1]), []) if i in index]
            best = next((index[i] for i, r in mrs
                         if i in index and (r["target"], r["artifact"], r["runtime"]) in best_ids), None)
            metric = next(r["metric"] for _, r in mrs if r["accuracy"] is not None)
            parts.append(svg.scatter(f"{t} / {model}: {metric} vs latency (Pareto front dashed)", pts,
                                     "p50 latency (ms)", f"{metric} (%)", front=front, best=best,
                                     group_order=platforms))
        parts.append("</div>")

    parts.append('<h2>Size by method</h2><div class="plots">')
    for model in sorted({r["model_name"] for r in rows}):
        sizes: dict[tuple[str, str], float] = {}
        for r in rows:
            if r["model_name"] == model and r["size_bytes"]:
                sizes[(r["method"], r["platform"])] = r["size_bytes"] / 1024
        methods = [m for m in ("fp32", "fp16", "dynamic", "static", "qat") if any(k[0] == m for k in sizes)]
        methods += sorted({k[0] for k in sizes} - set(methods))
        parts.append(svg.bars(f"{model}: artifact size by method", methods, platforms, sizes, "KiB"))
    parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
