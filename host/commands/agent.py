"""`host agent`: start, stop, inspect the agent on a target.

    host agent start  --target NAME     bootstrap if the device's agent differs from this host's, then start it
    host agent stop   --target NAME
    host agent status --target NAME     running? pid, port, installed version, device facts
    host agent logs   --target NAME [-n LINES]
"""

from __future__ import annotations

import argparse

from host.commands.common import add_json, dump_json
from host.quiet import user_err
from host.targets import get_target


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("agent", help=help_, description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    asub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    for action, text in (("start", "start the agent (bootstrapping it on the device if needed)"),
                         ("stop", "stop the agent"), ("status", "is the agent running, and which version"),
                         ("logs", "the agent's log on the device")):
        a = asub.add_parser(action, help=text, description=text)
        a.add_argument("--target", required=True, help="target name (see host targets list)")
        if action == "logs":
            a.add_argument("-n", "--lines", type=int, default=100, help="last N lines")
        add_json(a)
        a.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run(args: argparse.Namespace) -> int:
    from host.transports import open_transport

    target = get_target(args.target)

    def progress(msg: str) -> None:
        print(f"[{target.name}] {msg}", file=user_err(), flush=True)

    with open_transport(target) as tr:
        if args.action == "start":
            out = tr.start_agent(progress)
            out = {"target": target.name, **{k: v for k, v in out.items()}}
            text = (f"agent on {target.name}: {'started' if out.get('started', True) else 'already running'}, "
                    f"pid {out.get('pid')}, port {out.get('port')} on the device")
        elif args.action == "stop":
            stopped = tr.stop_agent()
            out = {"target": target.name, "stopped": stopped}
            text = f"agent on {target.name}: {'stopped' if stopped else 'was not running'}"
        elif args.action == "status":
            out = {"target": target.name, **tr.agent_status()}
            text = "\n".join(f"{k:<12} {v}" for k, v in out.items())
        else:
            log = tr.logs(args.lines)
            out = {"target": target.name, "log": log}
            text = log.rstrip("\n")
    if args.json:
        dump_json(out)
    else:
        print(text)
    if args.action == "status":
        return 0 if out.get("running") else 1
    return 0
