"""Plots as inline SVG strings, written by hand so the HTML report needs no plotting library and
stays one self-contained file: box plots of latency samples, accuracy-vs-latency scatter with a
Pareto front, grouped bars. Every plot is an <svg class="plot"> with a data-kind attribute and
`<title>` tooltips on its marks, which the report test reads back from the rendered page.
"""

from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
W, H = 640, 300
ML, MR, MT, MB = 70, 60, 30, 50


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


class Scale:
    """Maps data to pixels; log scale when asked (and every value is positive)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log and lo > 0
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-12))
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            # decades, plus 2x and 5x steps when the axis spans less than three decades
            mults = (1,) if self.hi - self.lo >= 3 else (1, 2, 5)
            ticks = [m * 10 ** e for e in range(math.floor(self.lo), math.ceil(self.hi) + 1) for m in mults]
            return [t for t in ticks if self.lo - 1e-9 <= math.log10(t) <= self.hi + 1e-9] or [10 ** self.lo]
        return [t for t in nice_ticks(self.lo, self.hi) if self.lo - 1e-9 <= t <= self.hi + 1e-9]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _open(kind: str, title: str, height: int = H) -> list[str]:
    return [f'<svg class="plot" data-kind="{kind}" xmlns="http://www.w3.org/2000/svg" width="{W}" '
            f'height="{height}" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}">',
            f'<rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/>',
            f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>']


def _axis_x(sx: Scale, y: float, label: str) -> list[str]:
    out = [f'<line x1="{sx.p0}" y1="{y}" x2="{sx.p1}" y2="{y}" stroke="#333"/>']
    for t in sx.ticks():
        px = sx(t)
        out.append(f'<line x1="{px:.1f}" y1="{y}" x2="{px:.1f}" y2="{y + 4}" stroke="#333"/>'
                   f'<text x="{px:.1f}" y="{y + 16}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')
    out.append(f'<text x="{(sx.p0 + sx.p1) / 2}" y="{y + 34}" text-anchor="middle" font-size="12">{escape(label)}</text>')
    return out


def _axis_y(sy: Scale, x: float, label: str) -> list[str]:
    out = [f'<line x1="{x}" y1="{sy.p0}" x2="{x}" y2="{sy.p1}" stroke="#333"/>']
    for t in sy.ticks():
        py = sy(t)
        out.append(f'<line x1="{x - 4}" y1="{py:.1f}" x2="{x}" y2="{py:.1f}" stroke="#333"/>'
                   f'<line x1="{x}" y1="{py:.1f}" x2="{W - MR}" y2="{py:.1f}" stroke="#eee"/>'
                   f'<text x="{x - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
    mid = (sy.p0 + sy.p1) / 2
    out.append(f'<text x="14" y="{mid}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 14 {mid})">{escape(label)}</text>')
    return out


def _quantile(sorted_v: Sequence[float], q: float) -> float:
    if not sorted_v:
        return float("nan")
    pos = q * (len(sorted_v) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_v) - 1)
    return sorted_v[i] + (sorted_v[j] - sorted_v[i]) * (pos - i)


def boxplot(title: str, series: Sequence[tuple[str, Sequence[float]]], unit: str = "ms",
            groups: Optional[Sequence[str]] = None, group_order: Optional[Sequence[str]] = None) -> str:
    """Horizontal box plots, one per (label, samples): box = p25..p75, line = median, whiskers =
    p1..p99, dots = the samples themselves (thinned to 150 per series)."""
    row_h = 28
    height = MT + MB + row_h * max(1, len(series))
    vals = [v for _, s in series for v in s if math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    log = bool(vals) and lo > 0 and hi / lo > 20
    left = 190
    sx = Scale(lo * (0.9 if log else 1) if not log else lo / 1.2, hi * 1.05 if not log else hi * 1.2,
               left, W - MR, log=log)
    out = _open("latency-distribution", title, height)
    out += _axis_x(sx, height - MB + 6, f"latency ({unit}){' — log scale' if sx.log else ''}")
    for i, (label, samples) in enumerate(series):
        yc = MT + row_h * i + row_h / 2
        if groups is not None:  # colour by group (platform), the same in every plot of the report
            order = list(group_order or sorted(set(groups)))
            colour = PALETTE[order.index(groups[i]) % len(PALETTE)] if groups[i] in order else "#777"
        else:
            colour = PALETTE[i % len(PALETTE)]
        s = sorted(v for v in samples if math.isfinite(v))
        out.append(f'<text x="{left - 8}" y="{yc + 4}" text-anchor="end" font-size="11">{escape(label)}</text>')
        if not s:
            out.append(f'<text x="{left + 4}" y="{yc + 4}" font-size="11" fill="#999">no samples</text>')
            continue
        p1, p25, p50, p75, p99 = (_quantile(s, q) for q in (0.01, 0.25, 0.5, 0.75, 0.99))
        tip = f"{label}: n={len(s)} p50={p50:.3g} p25={p25:.3g} p75={p75:.3g} p99={p99:.3g} {unit}"
        step = max(1, len(s) // 150)
        for k, v in enumerate(s[::step]):
            jitter = ((k * 37) % 11 - 5) * 1.2
            out.append(f'<circle cx="{sx(v):.1f}" cy="{yc + jitter:.1f}" r="1.6" fill="{colour}" fill-opacity="0.35"/>')
        out.append(f'<g class="box"><title>{escape(tip)}</title>'
                   f'<line x1="{sx(p1):.1f}" y1="{yc}" x2="{sx(p99):.1f}" y2="{yc}" stroke="{colour}"/>'
                   f'<rect x="{sx(p25):.1f}" y="{yc - 8}" width="{max(1.0, sx(p75) - sx(p25)):.1f}" height="16" '
                   f'fill="{colour}" fill-opacity="0.25" stroke="{colour}"/>'
                   f'<line x1="{sx(p50):.1f}" y1="{yc - 9}" x2="{sx(p50):.1f}" y2="{yc + 9}" stroke="{colour}" '
                   f'stroke-width="2.5"/></g>')
    out.append("</svg>")
    return "\n".join(out)


def scatter(title: str, points: Sequence[dict], x_label: str, y_label: str,
            front: Optional[Sequence[int]] = None, best: Optional[int] = None,
            group_order: Optional[Sequence[str]] = None) -> str:
    """points: {x, y, label, group}; `front` = indices on the Pareto front (joined by a step line
    and ringed), `best` = index drawn as a star-like double ring."""
    xs = [p["x"] for p in points]
    ys = [p["y"] for p in points]
    out = _open("accuracy-latency", title)
    if not points:
        out += [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#999">no points with both '
                'latency and accuracy</text>', "</svg>"]
        return "\n".join(out)
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    pad_x = (max(xs) - min(xs)) * 0.1 or max(xs) * 0.1 or 1.0
    sx = Scale(min(xs) / 1.3 if log else max(0.0, min(xs) - pad_x), max(xs) * 1.3 if log else max(xs) + pad_x,
               ML, W - MR, log=log)
    pad_y = (max(ys) - min(ys)) * 0.15 or 1.0
    sy = Scale(min(ys) - pad_y, max(ys) + pad_y, H - MB, MT)
    out += _axis_x(sx, H - MB, x_label + (" — log scale" if sx.log else ""))
    out += _axis_y(sy, ML, y_label)
    groups = list(group_order or sorted({p["group"] for p in points}))  # same colours in every plot
    groups += sorted({p["group"] for p in points} - set(groups))
    if front:
        pts = sorted((sx(xs[i]), sy(ys[i])) for i in front)
        path = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}" + "".join(
            f" H{x:.1f} V{y:.1f}" for x, y in pts[1:])
        out.append(f'<path class="pareto" d="{path}" fill="none" stroke="#444" stroke-dasharray="5,3"/>')
    for i, p in enumerate(points):
        colour = PALETTE[groups.index(p["group"]) % len(PALETTE)]
        cx, cy = sx(p["x"]), sy(p["y"])
        on_front = bool(front) and i in front
        tip = f"{p['label']}: {p['x']:.3g} / {p['y']:.4g}{' (Pareto front)' if on_front else ''}"
        ring = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="8" fill="none" stroke="#222" stroke-width="1.5"/>'
                if on_front else "")
        star = (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="12" fill="none" stroke="#d4a017" stroke-width="2.5"/>'
                if best == i else "")
        out.append(f'<g class="point{" front" if on_front else ""}{" best" if best == i else ""}">'
                   f'<title>{escape(tip)}</title>{ring}{star}'
                   f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}"/>' +
                   # only front points are named on the plot (the rest overlap); every point has a tooltip
                   (f'<text x="{cx + 9:.1f}" y="{cy - 7:.1f}" font-size="10">{escape(p["label"])}</text>'
                    if on_front or best == i else "") + "</g>")
    for k, g in enumerate(g for g in groups if any(p["group"] == g for p in points)):
        k = groups.index(g)
        out.append(f'<circle cx="{ML + 10 + 110 * k}" cy="{H - 8}" r="5" fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{ML + 18 + 110 * k}" y="{H - 4}" font-size="11">{escape(g)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bars(title: str, categories: Sequence[str], groups: Sequence[str],
         values: dict[tuple[str, str], float], y_label: str) -> str:
    """Grouped bars: one cluster per category, one bar per group with a value."""
    out = _open("size-by-method", title)
    vals = [v for v in values.values() if v is not None]
    if not vals:
        out += [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#999">no data</text>', "</svg>"]
        return "\n".join(out)
    sy = Scale(0.0, max(vals) * 1.1, H - MB, MT)
    out += _axis_y(sy, ML, y_label)
    out.append(f'<line x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}" stroke="#333"/>')
    cw = (W - MR - ML) / max(1, len(categories))
    bw = min(28.0, (cw - 10) / max(1, len(groups)))
    for ci, cat in enumerate(categories):
        x0 = ML + ci * cw + (cw - bw * len(groups)) / 2
        out.append(f'<text x="{ML + ci * cw + cw / 2:.1f}" y="{H - MB + 16}" text-anchor="middle" '
                   f'font-size="11">{escape(cat)}</text>')
        for gi, g in enumerate(groups):
            v = values.get((cat, g))
            if v is None:
                continue
            y = sy(v)
            out.append(f'<rect class="bar" x="{x0 + gi * bw:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" '
                       f'height="{H - MB - y:.1f}" fill="{PALETTE[gi % len(PALETTE)]}">'
                       f'<title>{escape(f"{g} {cat}: {v:.4g} {y_label}")}</title></rect>')
    for k, g in enumerate(groups):
        out.append(f'<rect x="{ML + 10 + 120 * k}" y="{H - 14}" width="10" height="10" '
                   f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{ML + 24 + 120 * k}" y="{H - 5}" '
                   f'font-size="11">{escape(g)}</text>')
    out.append("</svg>")
    return "\n".join(out)
