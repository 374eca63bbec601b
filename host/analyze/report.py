"""How an analysis is shown: the worst layers per platform on the terminal, everything as JSON, and an HTML page
with the error per layer along the depth of the network, one line per platform."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

WORST = 15


def _qp(row: dict[str, Any]) -> str:
    w, o = row.get("weight") or {}, row.get("output") or {}
    parts = []
    if w:
        parts.append(f"w {'per-ch' if w.get('per_channel') else 'per-t'} {'sym' if w.get('symmetric') else 'asym'} "
                     f"|w|<={w.get('range_max', 0):.3g}")
    if o:
        lo, hi = o.get("range", [0, 0])
        parts.append(f"out [{lo:.3g}, {hi:.3g}] {'sym' if o.get('symmetric') else 'asym'}")
    return "; ".join(parts) or "-"


def text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        base = r.get("baseline", {})
        lines.append(f"== {r['platform']}: all int8 {r['metric']} {base.get('metric', float('nan')):.4f}, cosine "
                     f"{base.get('cosine', float('nan')):.4f} ({r['check_samples']} check samples; numerics on "
                     f"{r['numerics_samples']}){' [cached]' if r.get('cache_hit') else ''}")
        lines.append(f"  worst {WORST} layers by SQNR (output vs FP32):")
        rows = [("layer", "op", "prec", "SQNR dB", "cosine", "quantization")]
        for row in sorted(r["layers"], key=lambda x: x["sqnr_db"])[:WORST]:
            rows.append((row["layer"], row["op"], row["precision"], f"{row['sqnr_db']:.1f}", f"{row['cosine']:.4f}",
                         _qp(row)))
        lines += _table(rows)
        sens = r.get("sensitivity") or []
        if sens:
            lines.append(f"  sensitivity: model output with only that layer float (most sensitive first):")
            rows = [("layer", "output SQNR gain dB", r["metric"], "gain", "cosine", "layer SQNR dB")]
            for s in sens[:WORST]:
                rows.append((s["layer"], f"{s.get('out_sqnr_gain_db', 0.0):+.2f}", f"{s['metric']:.4f}",
                             f"{s['gain']:+.4f}", f"{s['cosine']:.4f}",
                             "-" if s["sqnr_db"] is None else f"{s['sqnr_db']:.1f}"))
            lines += _table(rows)
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def to_json(results: list[dict[str, Any]]) -> str:
    return json.dumps(results, indent=2, default=float)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def write_html(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """SQNR per layer (graph order) per platform as an inline SVG: where the platforms' errors diverge."""
    w, h, pad = 900, 320, 40
    series = [(r["platform"], [row["sqnr_db"] for row in sorted(r["layers"], key=lambda x: x["order"])])
              for r in results]
    n = max((len(v) for _, v in series), default=1)
    vals = [v for _, s in series for v in s] or [0.0]
    lo, hi = min(vals), max(vals) + 1e-9

    def xy(i: int, v: float) -> str:
        return f"{pad + i * (w - 2 * pad) / max(1, n - 1):.1f},{h - pad - (v - lo) * (h - 2 * pad) / (hi - lo):.1f}"

    lines = [f'<polyline fill="none" stroke="{COLOURS[k % 4]}" stroke-width="2" points="'
             + " ".join(xy(i, v) for i, v in enumerate(s)) + '"/>' for k, (_, s) in enumerate(series)]
    legend = "".join(f'<span style="color:{COLOURS[k % 4]}">&#9632; {html.escape(p)}</span> '
                     for k, (p, _) in enumerate(series))
    tables = "".join(f"<h2>{html.escape(r['platform'])}</h2><pre>{html.escape(text([r]))}</pre>" for r in results)
    path.write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>SQNR (dB) of each layer's output vs FP32, layers in graph order ({lo:.1f} to {hi:.1f} dB). {legend}</p>"
        f'<svg width="{w}" height="{h}" style="border:1px solid #ccc">{"".join(lines)}</svg>{tables}')
