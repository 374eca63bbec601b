"""`host targets`: list, show, add and check the devices in targets/*.toml.

    host targets list                       every target found (./targets, $EDGEBENCH_TARGETS, ~/.config/edgebench/targets)
    host targets show NAME                  all fields of one target
    host targets add NAME --kind ... --transport ... [--host/--port/--user/--key/--serial/...]
    host targets check NAME [--start]       reachable? agent version, runtimes, device facts, what is missing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from host.commands.common import add_json, dump_json, print_table
from host.errors import UserError
from host.quiet import user_err
from host.targets import (
    KINDS,
    TRANSPORTS,
    Target,
    TargetError,
    get_target,
    load_targets,
    parse_target,
    validate,
)

# Comments written above each field by `targets add`, so a generated file documents itself.
FIELD_DOCS = {
    "name": "name used with --target",
    "kind": f"device kind: {', '.join(KINDS)}",
    "transport": "how the host reaches it: local (this machine), ssh (paramiko + tunnel), adb (adb forward)",
    "description": "free text shown by `host targets list`",
    "host": "ssh: device address (name or IP)",
    "port": "ssh: port of the device's sshd",
    "user": "ssh: login user",
    "key": "ssh: private key file; empty = ssh-agent / default keys",
    "serial": "adb: device serial from `adb devices` (USB) or host:port (TCP)",
    "adb_connect": "adb: host:port to `adb connect` for TCP devices; empty for USB",
    "workdir": "device directory for the agent, its venv and its store",
    "python": "device-side Python used to create the agent's venv (adb: the Python that runs it, e.g. Termux's)",
    "runtime_extra": "pip extra installed on the device: tflite, tflite-legacy, onnx, torch, executorch, tensorrt",
    "system_site_packages": "venv sees system packages (Jetson: JetPack's TensorRT)",
    "wheels_dir": "host directory of wheels for the device's platform, pushed for devices without internet",
    "agent_port": "agent's port on the device, bound to the device's loopback only (0 = any free port)",
    "store_dir": "artifact store on the device; empty = <workdir>/store",
    "threads": "runtime threads by default (0 = runtime default)",
    "cpu_affinity": "CPUs the runtime may use, e.g. \"4-7\" for big cores; empty = all",
    "prefer_runtimes": "runtimes to prefer when several can run a format, e.g. [\"tensorrt\"]",
}
_FLAGS = ("host", "port", "user", "key", "serial", "adb_connect", "workdir", "python", "runtime_extra", "wheels_dir",
          "agent_port", "store_dir", "threads", "cpu_affinity", "description")


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("targets", help=help_, description=__doc__.split("\n\n")[0] + " Target files are TOML; "
                       "see targets/*.toml for documented examples.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    tsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    ls = tsub.add_parser("list", help="every target found, with where it came from")
    add_json(ls)
    ls.set_defaults(func=run_list)
    sh = tsub.add_parser("show", help="all fields of one target")
    sh.add_argument("name")
    add_json(sh)
    sh.set_defaults(func=run_show)
    ad = tsub.add_parser("add", help="write targets/NAME.toml (with a comment on every field)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ad.add_argument("name")
    ad.add_argument("--kind", required=True, choices=KINDS)
    ad.add_argument("--transport", required=True, choices=TRANSPORTS)
    defaults = Target(name="x")
    for f in _FLAGS:
        default = getattr(defaults, f)
        ad.add_argument(f"--{f.replace('_', '-')}", type=type(default), default=None,
                        help=f"{FIELD_DOCS[f]} (default {default!r})")
    ad.add_argument("--system-site-packages", action="store_true", help=FIELD_DOCS["system_site_packages"])
    ad.add_argument("--prefer-runtime", action="append", default=[], help=FIELD_DOCS["prefer_runtimes"])
    ad.add_argument("--dir", default="targets", help="directory to write into")
    ad.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_json(ad)
    ad.set_defaults(func=run_add)
    ck = tsub.add_parser("check", help="reachability, agent version, runtimes, device facts, what is missing")
    ck.add_argument("name")
    ck.add_argument("--start", action="store_true",
                    help="start the agent (bootstrapping it if needed) when it is not running, to list its runtimes")
    add_json(ck)
    ck.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _address(t: Target) -> str:
    if t.transport == "ssh":
        return f"{t.user + '@' if t.user else ''}{t.host}:{t.port}"
    if t.transport == "adb":
        return t.serial or t.adb_connect
    return "loopback"


def run_list(args: argparse.Namespace) -> int:
    broken: dict[str, str] = {}
    targets = load_targets(broken=broken)
    for err in broken.values():   # listed, not fatal: the other targets still work
        print(f"host targets: skipped {err}", file=user_err())
    if args.json:
        dump_json([t.to_dict() for t in targets.values()])
        return 0
    print_table([[t.name, t.kind, t.transport, _address(t), t.runtime_extra, t.source] for t in targets.values()],
                ["name", "kind", "transport", "address", "extra", "source"])
    return 0


def run_show(args: argparse.Namespace) -> int:
    t = get_target(args.name)
    if args.json:
        dump_json(t.to_dict())
    else:
        for k, v in t.to_dict().items():
            print(f"{k:<22} {v!r}")
    return 0


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))        # a JSON string is a valid TOML basic string


def render_toml(t: Target) -> str:
    """The target as TOML with every field commented (fields left at their default are written too)."""
    lines = [f"# Target {t.name!r}: written by `host targets add`; edit freely.", ""]
    for name, value in t.to_dict().items():
        if name in ("source",):
            continue
        lines.append(f"# {FIELD_DOCS.get(name, name)}")
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def run_add(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"name": args.name, "kind": args.kind, "transport": args.transport}
    for f in _FLAGS:
        v = getattr(args, f)
        if v is not None:
            fields[f] = v
    fields["system_site_packages"] = args.system_site_packages
    fields["prefer_runtimes"] = args.prefer_runtime
    t = Target(**fields)
    validate(t)
    path = Path(args.dir) / f"{args.name}.toml"
    if path.exists() and not args.force:
        raise TargetError(f"{path} exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(t))
    parse_target(path)                 # what we wrote must load back
    if args.json:
        dump_json({"written": str(path), "target": t.to_dict()})
    else:
        print(f"wrote {path}; check it with: host targets check {args.name}")
    return 0


def check_target(t: Target, start: bool = False, progress=None) -> dict[str, Any]:
    """What `targets check` reports; never raises for a device problem (it lands in 'missing')."""
    from host.client import AgentClient
    from host.transports import open_transport

    rep: dict[str, Any] = {"target": t.name, "kind": t.kind, "transport": t.transport, "address": _address(t),
                           "reachable": False, "agent": {}, "runtimes": [], "facts": {}, "missing": []}
    try:
        tr = open_transport(t)
    except UserError as e:
        rep["missing"].append(str(e))
        return rep
    try:
        status = tr.agent_status()       # reaches the device (ssh login / adb get-state) without starting anything
        rep["reachable"] = True
        rep["agent"] = status
        if status.get("device"):
            rep["facts"]["device"] = status["device"]
        if status.get("installed") == "" and t.transport != "local":
            rep["missing"].append(f"agent not installed on the device: host agent start --target {t.name}")
        elif status.get("up_to_date") is False:
            rep["missing"].append(f"agent on the device differs from this host's ({status.get('installed')} vs "
                                  f"{status.get('host_build')}): it is reinstalled at the next start")
        if not status.get("running") and not start:
            rep["missing"].append(f"agent not running: host agent start --target {t.name}")
            return rep
        address = tr.connect(progress)
        with AgentClient(address, timeout=30) as c:
            info = c.info()
        if not status.get("running"):
            rep["agent"] = tr.agent_status()       # pid/port of the agent just started
        rep["agent"].update(running=True, agent_version=info["agent_version"], python=info["python"])
        rep["runtimes"] = info["runtimes"]
        rep["facts"].update(info["facts"], machine=info["machine"], platform=info["platform"],
                            cpu_count=info["cpu_count"], mem_total_bytes=info["mem_total_bytes"])
        avail = [r["name"] for r in info["runtimes"] if r["available"]]
        if not avail:
            rep["missing"].append(f"no runtime installed on the device: set runtime_extra in {t.source or 'the target'}")
        for pref in t.prefer_runtimes:
            if pref not in avail:
                rep["missing"].append(f"preferred runtime {pref} is not available on the device")
    except UserError as e:
        rep["missing"].append(str(e))
    finally:
        tr.close()
    return rep


def run_check(args: argparse.Namespace) -> int:
    t = get_target(args.name)
    rep = check_target(t, start=args.start, progress=lambda m: print(f"[{t.name}] {m}", file=user_err(), flush=True))
    if args.json:
        dump_json(rep)
    else:
        print(f"{t.name} ({t.kind}, {t.transport} {rep['address']}): "
              f"{'reachable' if rep['reachable'] else 'NOT reachable'}")
        a = rep["agent"]
        if a:
            print(f"  agent: {'running pid ' + str(a.get('pid')) if a.get('running') else 'not running'}"
                  f"{', version ' + a['agent_version'] if a.get('agent_version') else ''}"
                  f"{', installed ' + a['installed'] if a.get('installed') else ''}")
        for r in rep["runtimes"]:
            state = f"{r['version']} {','.join(r['delegates'])}" if r["available"] else r["detail"]
            print(f"  runtime {r['name']:<15} {state}")
        for k, v in rep["facts"].items():
            print(f"  {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
        for m in rep["missing"]:
            print(f"  missing: {m}")
    return 0 if rep["reachable"] and not rep["missing"] else 1
