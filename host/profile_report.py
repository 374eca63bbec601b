"""Stored per-operator profiles for readers: picking one by a selector a user can type (`host compare-ops`),
the latest one per artifact and device (`host report`), and the report's profile section as text, JSON and
HTML (a stacked bar per artifact: share of its op time by op family).

Profiles are read through the results store's own API (`store.profiles(...)`); nothing here writes.
Every time shown is a median the device measured; a figure the profiler did not give is shown as "-".
"""

from __future__ import annotations

from html import escape
from typing import Any, Optional

from host.errors import UserError
from host.profile import by_type, mark_ops

SELECTOR_HELP = ("a stored profile: its id (host compare-ops --list; host profile prints it), run:ID for the profile "
                 "that followed benchmark ID (deploy --profile), or ARTIFACT@TARGET (artifact file name or sha256 "
                 "prefix; the latest profile of it on that target; @TARGET may be left out when one target has it)")


def _describe(p: dict[str, Any]) -> str:
    rt = (p.get("runtime") or {}).get("name", "") or "?"
    return f"#{p['id']} {p.get('artifact', '?')}@{p.get('target', '?')} ({rt})"


def select_profile(store: Any, selector: str) -> dict[str, Any]:
    """One stored profile for SELECTOR (see SELECTOR_HELP); a one-line UserError when none or several fit."""
    sel = selector.strip()
    allp = store.profiles()
    if not allp:
        raise UserError(f"no profiles in {getattr(store, 'path', 'the results database')}: run host profile or "
                        "host deploy --profile first, or pass --db")
    if sel.isdigit() or sel.startswith("profile:"):
        pid = int(sel.split(":", 1)[-1]) if sel.split(":", 1)[-1].isdigit() else -1
        hit = [p for p in allp if p["id"] == pid]
        if not hit:
            raise UserError(f"no profile with id {sel} (ids {allp[0]['id']}..{allp[-1]['id']}; see --list)")
        return mark_ops(hit[0])
    if sel.startswith("run:"):
        bid = sel[4:]
        hit = [p for p in allp if str(p.get("benchmark_id")) == bid]
        if not hit:
            raise UserError(f"no profile followed benchmark {bid}: profiles are linked to a run by "
                            "host deploy --profile (see --list)")
        return mark_ops(hit[-1])
    name, _, target = sel.rpartition("@") if "@" in sel else (sel, "", "")
    name = name.rsplit("/", 1)[-1]
    hit = [p for p in allp if (p.get("artifact") == name or (len(name) >= 8 and str(p.get("sha256", "")).startswith(name)))
           and (not target or p.get("target") == target)]
    if not hit:
        raise UserError(f"no stored profile matches {selector!r} (see host compare-ops --list)")
    targets = sorted({p.get("target", "") for p in hit})
    if len(targets) > 1:
        raise UserError(f"{selector!r} was profiled on {', '.join(targets)}: say which with {name}@TARGET")
    return mark_ops(hit[-1])


def list_rows(store: Any) -> list[list[str]]:
    rows = []
    for p in store.profiles():
        rt = p.get("runtime") or {}
        rows.append([str(p["id"]), str(p.get("benchmark_id") or "-"), p.get("target", ""), p.get("artifact", ""),
                     f"{p.get('method', '')}/{p.get('precision', '')}", rt.get("name", "") or "-",
                     str(len(p.get("ops") or [])), _ms(p.get("op_sum_ms")),
                     "ok" if p.get("status") == "ok" else p.get("status", "")[:60],
                     ",".join(p.get("flags") or []) or "-"])
    return rows


LIST_HEADER = ["id", "run", "target", "artifact", "method", "runtime", "ops", "ops sum ms", "status", "flags"]


def latest_profiles(store: Any, target: Optional[list[str]] = None,
                    model: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """The latest profile per (target, artifact sha256, runtime), in the order they were stored."""
    if not hasattr(store, "profiles"):
        return []
    latest: dict[tuple, dict[str, Any]] = {}
    for p in store.profiles(target=target, model=model):
        latest[(p.get("target"), p.get("sha256"), (p.get("runtime") or {}).get("name", ""))] = p
    return [mark_ops(p) for p in sorted(latest.values(), key=lambda p: p["id"])]


def _ms(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def _pct(v: Any) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}%"


def _marks(o: dict[str, Any]) -> str:
    return ", ".join(m for m, on in (("stayed float", o.get("stayed_float")),
                                     ("outside delegate", o.get("outside_delegate"))) if on)


def _head_line(p: dict[str, Any]) -> str:
    rt = p.get("runtime") or {}
    runtime = f"{rt.get('name', '')} {rt.get('version', '')}".strip() or "?"
    line = (f"{p.get('target')} / {p.get('artifact')} ({p.get('platform')} {p.get('method')}/{p.get('precision')}, "
            f"{runtime}; profile #{p['id']})")
    if p.get("status") != "ok":
        return line + f": {p.get('status')}"
    line += (f": {len(p['ops'])} ops, ops sum {_ms(p.get('op_sum_ms'))} ms, coverage {_pct(p.get('coverage'))}, "
             f"overhead {'-' if p.get('overhead') != p.get('overhead') or p.get('overhead') is None else format(p['overhead'], '.2f') + 'x'}")
    n_float = sum(bool(o.get("stayed_float")) for o in p["ops"])
    n_out = sum(bool(o.get("outside_delegate")) for o in p["ops"])
    if n_float:
        line += f"; {n_float} op{'s' if n_float > 1 else ''} stayed float"
    if n_out:
        line += f"; {n_out} op{'s' if n_out > 1 else ''} outside the delegate"
    if p.get("flags"):
        line += f"; FLAGGED {', '.join(p['flags'])}"
    return line


def top_ops(p: dict[str, Any], n: int) -> list[dict[str, Any]]:
    return sorted(p.get("ops") or [], key=lambda o: -o["median_ms"])[:n]


def text_section(profiles: list[dict[str, Any]], top: int) -> str:
    """The report's profile section as plain text: per artifact a head line and its `top` slowest ops."""
    if not profiles:
        return ""
    lines = ["", f"Per-operator profiles (latest per artifact and device; top {top} ops by median time; share = of "
                 "the ops' summed medians):"]
    for p in profiles:
        lines.append("  " + _head_line(p))
        ops = top_ops(p, top)
        if not ops:
            continue
        cells = [["op / layer (<- source)", "op type", "precision", "backend", "median ms", "share", "marks"]]
        for o in ops:
            cells.append([o["name"][:56] + (f" <- {o['source']}" if o.get("source") else ""), o["op_type"][:30],
                          o.get("precision") or "-", o.get("backend") or "-", _ms(o["median_ms"]), _pct(o["share"]),
                          _marks(o) or "-"])
        widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        for k, r in enumerate(cells):
            lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if k == 0:
                lines.append("    " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def json_section(profiles: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    keys = ("id", "benchmark_id", "target", "artifact", "sha256", "model_name", "platform", "method", "precision",
            "runtime", "status", "profiler", "runs", "op_sum_ms", "profiled_total_ms", "coverage", "overhead", "flags")
    op_keys = ("name", "source", "op_type", "precision", "backend", "median_ms", "share", "stayed_float",
               "outside_delegate")
    return [{k: p.get(k) for k in keys} | {"top_ops": [{k: o.get(k) for k in op_keys} for o in top_ops(p, top)],
                                           "by_type": by_type(p)} for p in profiles]


# ---- HTML: one stacked bar per artifact, share of its op time by op family -----------------------------------
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
OTHER = "#c7c7c7"


def stacked_bars(profiles: list[dict[str, Any]], max_families: int = 8) -> str:
    """An SVG: a horizontal bar per profiled artifact, split by op family (share of that artifact's op time);
    the families with the most time over all artifacts get a colour each, the rest is 'other'."""
    ok = [p for p in profiles if p.get("status") == "ok" and p.get("ops")]
    fams = {p["id"]: by_type(p) for p in ok}
    weight: dict[str, float] = {}
    for fs in fams.values():
        for f in fs:
            weight[f["family"]] = weight.get(f["family"], 0.0) + (f["share"] if f["share"] == f["share"] else 0.0)
    named = sorted(weight, key=lambda k: -weight[k])[:max_families]
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(named)}
    label_w, bar_w, row_h, top = 300, 440, 26, 34
    legend_rows = (len(named) + 1 + 3) // 4
    height = top + row_h * len(ok) + 24 + 18 * legend_rows
    width = label_w + bar_w + 70
    out = [f'<svg class="plot" data-kind="op-share" xmlns="http://www.w3.org/2000/svg" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="share of op time by op type">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
           "where each artifact's time went: share of its op time by op type</text>"]
    for r, p in enumerate(ok):
        y = top + r * row_h
        label = f"{p['target']} / {p['artifact']} ({(p.get('runtime') or {}).get('name', '')})"
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="11">{escape(label[:52])}</text>')
        x = float(label_w)
        other = 0.0
        for f in fams[p["id"]]:
            share = f["share"] if f["share"] == f["share"] else 0.0
            if f["family"] not in colour:
                other += share
                continue
            w = share * bar_w
            out.append(f'<rect class="seg" data-artifact="{escape(p["artifact"])}" data-family="{escape(f["family"])}" '
                       f'data-share="{share:.4f}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
                       f'fill="{colour[f["family"]]}"><title>{escape(f["family"])} ({escape(", ".join(f["types"][:4]))})'
                       f': {100 * share:.1f}% of op time, {f["ms"]:.4f} ms over {f["ops"]} ops</title></rect>')
            x += w
        if other > 0:
            out.append(f'<rect class="seg" data-artifact="{escape(p["artifact"])}" data-family="other" '
                       f'data-share="{other:.4f}" x="{x:.1f}" y="{y}" width="{other * bar_w:.1f}" height="{row_h - 6}" '
                       f'fill="{OTHER}"><title>other op types: {100 * other:.1f}%</title></rect>')
        out.append(f'<text x="{label_w + bar_w + 6}" y="{y + 15}" font-size="11">{_ms(p.get("op_sum_ms"))} ms</text>')
    ly = top + row_h * len(ok) + 14
    for k, name in enumerate(named + ["other"]):
        lx, lyy = label_w + 110 * (k % 4) - 200, ly + 18 * (k // 4)
        out.append(f'<rect x="{lx}" y="{lyy - 9}" width="10" height="10" fill="{colour.get(name, OTHER)}"/>'
                   f'<text x="{lx + 14}" y="{lyy}" font-size="11">{escape(name[:16])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def html_section(profiles: list[dict[str, Any]], top: int) -> str:
    if not profiles:
        return ""
    parts = ['<h2 id="profiles">Per-operator profiles</h2>',
             '<p class="note">The runtime\'s own profiler in a run of its own after the measurement (latest profile per '
             "artifact and device). Share = of the ops' summed medians; coverage = that sum / the profiled run; "
             "overhead = profiled / unprofiled run time. Marked: ops that stayed float in an int8 artifact, ops "
             "outside the delegate.</p>"]
    if any(p.get("status") == "ok" and p.get("ops") for p in profiles):
        parts.append('<div class="plots">' + stacked_bars(profiles) + "</div>")
    for p in profiles:
        parts.append(f'<h3 class="profile" style="font-size:14px" data-profile="{p["id"]}">{escape(_head_line(p))}</h3>')
        ops = top_ops(p, top)
        if not ops:
            continue
        parts.append('<table class="top-ops"><thead><tr>' + "".join(
            f"<th>{h}</th>" for h in ("op / layer", "source", "op type", "precision", "backend", "median ms", "share",
                                      "marks")) + "</tr></thead><tbody>")
        for o in ops:
            m = _marks(o)
            parts.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
                o["name"], o.get("source") or "-", o["op_type"], o.get("precision") or "-", o.get("backend") or "-",
                _ms(o["median_ms"]), _pct(o["share"]))) + (f'<td class="flag">{escape(m)}</td>' if m else "<td>-</td>")
                + "</tr>")
        parts.append("</tbody></table>")
    return "\n".join(parts)


def extend_report(text: str, fmt: str, profiles: list[dict[str, Any]], top: int, rows: int = 1) -> str:
    """`host report`'s rendered text with the profile section added: after the table, inside the JSON object
    (key "profiles"), before the end of the HTML page; CSV rows stay one per benchmark (no profile there)."""
    if not profiles or top == 0:
        return text
    if fmt == "table":
        if not rows:   # a database with profiles only (host profile): no empty benchmark table above them
            return "no benchmark rows for these filters (host deploy); profiles only" + text_section(profiles, top)
        return text + "\n" + text_section(profiles, top)
    if fmt == "json":
        import json

        from host.commands.common import _no_nan

        doc = json.loads(text)
        doc["profiles"] = json_section(profiles, top)
        return json.dumps(_no_nan(doc), indent=2, default=str)
    if fmt == "html":
        end = text.rfind("</body>")
        return text[:end] + html_section(profiles, top) + "\n" + text[end:] if end >= 0 else text
    return text
