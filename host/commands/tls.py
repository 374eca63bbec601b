"""`host tls init DIR --agent NAME`: the project CA and mutual-TLS certificates for an agent reached over the
network without an SSH/adb tunnel (the `tcp` transport). The work is host.tls; this is its CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import add_json, dump_json


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("tls", help=help_, description=(
        "Make (or reuse) the project CA in DIR and issue the host's client certificate, the agent's server "
        "certificate (its DNS name is NAME, also the target's tls_name) and the agent's call secret. Keys are "
        "written 0600; copy agent-NAME.{pem,key,secret} and ca.pem to the device, keep ca.key on the host."))
    tsub = p.add_subparsers(dest="tls_command", metavar="ACTION", required=True)
    i = tsub.add_parser("init", help="CA + certificates for one agent")
    i.add_argument("dir", type=Path, help="where the CA and certificates live")
    i.add_argument("--agent", required=True, help="the agent's name (its certificate's DNS name)")
    i.add_argument("--ip", action="append", default=[], help="an IP address the host dials the agent at (repeatable)")
    i.add_argument("--days", type=int, default=825, help="certificate lifetime in days")
    add_json(i)
    i.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    from host.errors import UserError
    from host.tls import init

    if args.days < 1:
        raise UserError(f"--days must be at least 1, got {args.days}")
    try:
        files = init(args.dir, args.agent, tuple(args.ip), args.days)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot make the certificates in {args.dir}: {e}") from e
    if args.json:
        dump_json(files)
        return 0
    for k, v in files.items():
        print(f"{k:<11} {v}")
    print(f"on the device: agent serve --listen 0.0.0.0:50051 --tls-cert agent-{args.agent}.pem --tls-key "
          f"agent-{args.agent}.key --tls-ca ca.pem --auth-file agent-{args.agent}.secret")
    return 0
