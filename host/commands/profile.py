"""`host profile`: a per-operator profile on the device with the runtime's own profiler, and --compare."""

from __future__ import annotations

import argparse
from typing import Any

from host.commands.common import add_db, add_json, db_path, dump_json, expand_artifacts, print_table
from host.errors import UserError


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("profile", help=help_, description=(
        "Run an artifact on a target with the runtime's own per-op profiler (ONNX Runtime session profiling, "
        "ExecuTorch ETDump, torch's profiler around the lite interpreter; TensorRT's IProfiler), in a run of its "
        "own, never inside a benchmark's steady state. Per op: name, op type, precision, backend, median time "
        "over the profiled runs and share of the ops' total. LiteRT's Python API reaches no op profiler: it "
        "says so in one line. --compare lines a second artifact up op by op (e.g. fp32 vs int8). Profiles are stored: "
        "host compare-ops diffs any two later (also across devices), host report shows each artifact's top ops."))
    p.add_argument("--target", required=True, help="target name (see host targets list)")
    p.add_argument("--artifact", required=True, help="artifact file (A)")
    p.add_argument("--compare", metavar="B", help="a second artifact to line up with A op by op")
    p.add_argument("--runs", type=int, default=10, help="profiled runs (after one dropped warm-up run)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: the target's, else 1)")
    p.add_argument("--runtime", default="", help="force a runtime (onnxruntime, executorch, ...)")
    p.add_argument("--runtime-option", action="append", default=[], metavar="KEY=VALUE",
                   help="runtime option, e.g. optimization=disable; repeatable")
    p.add_argument("--top", type=int, default=0, help="show only the N slowest ops (0 = all)")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.client import AgentClient
    from host.deploy import RunSettings, stderr_log
    from host.profile import compare, profile_artifact
    from host.results.store import ResultStore
    from host.targets import get_target
    from host.transports import open_transport

    if not 1 <= args.runs <= 1000:
        raise UserError(f"--runs must be between 1 and 1000, got {args.runs}")
    opts = dict(kv.split("=", 1) for kv in args.runtime_option if "=" in kv)
    if len(opts) != len(args.runtime_option):
        raise UserError("--runtime-option wants KEY=VALUE")
    target = get_target(args.target)
    arts = expand_artifacts([args.artifact] + ([args.compare] if args.compare else []))
    settings = RunSettings(threads=args.threads, runtime=args.runtime, runtime_options=opts)
    store = ResultStore(db_path(args))
    transport = open_transport(target)
    try:
        address = transport.connect(lambda m: stderr_log(f"[{target.name}] {m}"))
        recs = []
        with AgentClient(address) as client:
            for art in arts:
                client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
                recs.append(profile_artifact(client, target, art, settings.run_options(target), args.runs, store,
                                             stderr_log))
    finally:
        transport.close()
    cmp = compare(recs[0], recs[1]) if len(recs) == 2 and all(r["status"] == "ok" for r in recs) else None
    if args.json:
        dump_json({"profiles": recs, "compare": cmp} if args.compare else recs[0])
    else:
        for r in recs:
            print_profile(r, args.top)
        if cmp:
            print_compare(cmp)
        print(f"profiles stored in {store.path} as #{', #'.join(str(r['id']) for r in recs)} "
              "(host compare-ops A B lines any two up; host report shows their top ops)")
    return 0 if all(r["status"] == "ok" and not r["flags"] for r in recs) else 1


def print_profile(r: dict[str, Any], top: int = 0) -> None:
    rt = r.get("runtime") or {}
    print(f"{r['artifact']} on {r['target']}: {rt.get('name', '')} {rt.get('version', '')}".rstrip())
    if r["status"] != "ok":
        print(f"  {r['status']}")
        return
    ops = sorted(r["ops"], key=lambda o: -o["median_ms"])[:top] if top else r["ops"]
    print_table([[o["name"][:60] + (f" <- {o['source']}" if o.get("source") else ""), o["op_type"][:32],
                  (o["precision"] or "-") + marks(o), o["backend"] or "-",
                  f"{o['median_ms']:.4f}", f"{o['share'] * 100:.1f}%"] for o in ops],
                ["op / layer (<- source module)", "op type", "precision", "backend", "median ms", "share"])
    print(f"  {r['profiler']}; {r['runs']} profiled runs; ops sum {r['op_sum_ms']:.4f} ms, profiled run "
          f"{r['profiled_total_ms']:.4f} ms (coverage {r['coverage'] * 100:.0f}%); around the call "
          f"{r['profiled_wall_p50_ms']:.4f} ms profiled vs {r['unprofiled_p50_ms']:.4f} ms unprofiled (overhead "
          f"{r['overhead']:.2f}x)"
          + (f"; {', '.join(r['flags'])}" if r["flags"] else ""))


def marks(o: dict[str, Any]) -> str:
    """The marks a row carries: ' (stayed float)' in an int8 artifact, ' (outside delegate)'."""
    return (" (stayed float)" if o.get("stayed_float") else "") + (" (outside delegate)" if o.get("outside_delegate")
                                                                   else "")


def print_compare(c: dict[str, Any]) -> None:
    a, b = c["a"], c["b"]

    def side(h: dict[str, Any]) -> str:
        rt = (h.get("runtime") or {}).get("name", "")
        return f"{h['artifact']} on {h['target']} ({h['precision']}{', ' + rt if rt else ''})"

    print(f"\nA = {side(a)}, B = {side(b)}: ops sum "
          f"{a['op_sum_ms']:.4f} -> {b['op_sum_ms']:.4f} ms (B/A {c['total_ratio']:.2f}x)")
    for k, h in (("A", a), ("B", b)):
        if h.get("flags"):
            print(f"  {k} is flagged: {', '.join(h['flags'])} (only what arrived is compared)")
    if c.get("by_type"):
        print("where the time went, by op family (sum of op medians, share of each side's ops):")
        print_table([[t["family"][:32], _ms_v(t["a_ms"]), _pct_v(t["a_share"]), _ms_v(t["b_ms"]),
                      _pct_v(t["b_share"])] for t in c["by_type"]],
                    ["op family", "A ms", "A share", "B ms", "B share"])
        print()
    rows = []
    for r in c["rows"]:
        oa, ob = r["a"] or {}, r["b"] or {}
        rows.append([oa.get("name", "-")[:40], ob.get("name", "-")[:40], oa.get("op_type", "-")[:20],
                     ob.get("op_type", "-")[:20], f"{oa.get('precision') or '-'}/{ob.get('precision') or '-'}",
                     _ms(oa), _ms(ob), "-" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}x",
                     _pct(oa), _pct(ob), r["match"] + (" B SLOWER" if r["slower"] else "")])
    print_table(rows, ["A op", "B op", "A type", "B type", "prec A/B", "A ms", "B ms", "B/A", "A share",
                       "B share", "matched by"])
    slower = c["slower_in_b"]
    if slower:
        print(f"B is slower than A on {len(slower)} matched ops: "
              + ", ".join(f"{r['a']['name']} ({r['ratio']:.2f}x)" for r in slower[:8]))
    if c["only_b_ms"]:
        print(f"ops only B has (e.g. quantize/dequantize) take {c['only_b_ms']:.4f} ms")


def _ms_v(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def _pct_v(v: Any) -> str:
    return "-" if v is None or v != v else f"{v * 100:.1f}%"


def _ms(o: dict[str, Any]) -> str:
    return f"{o['median_ms']:.4f}" if o else "-"


def _pct(o: dict[str, Any]) -> str:
    return f"{o['share'] * 100:.1f}%" if o else "-"
