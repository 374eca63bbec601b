"""`agent`: the on-device agent.

    agent serve --listen 127.0.0.1:50051 --store DIR    serve the gRPC API (loopback by default)
    agent info [--json]                                 what this device has (runtimes, facts)
    agent --version
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from agent import __version__


def _serve(args: argparse.Namespace) -> int:
    from agent.server import make_server

    try:
        server, port = make_server(args.store, args.listen, cpu_affinity=args.cpu_affinity,
                                   quota_bytes=int(args.quota_mb * 1024 * 1024))
    except (OSError, RuntimeError) as e:
        print(f"agent: error: {e}", file=sys.stderr)
        return 2
    host = args.listen.rsplit(":", 1)[0]
    server.start()
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    print(f"agent {__version__} listening on {host}:{port} store={Path(args.store).resolve()} pid={os.getpid()}",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    if args.pid_file:
        Path(args.pid_file).unlink(missing_ok=True)
    print("agent stopped", flush=True)
    return 0


def _info(args: argparse.Namespace) -> int:
    from agent import probes
    from agent import runtimes as registry

    info = {"agent_version": __version__, "runtimes": registry.describe_all(), "facts": probes.device_facts()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"agent {__version__}")
        for r in info["runtimes"]:
            state = f"{r['version']} {','.join(r['delegates'])}" if r["available"] else r["detail"]
            print(f"  {r['name']:<15} {'/'.join(r['formats']):<16} {state}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="agent", description="On-device agent: stores artifacts, runs them with the "
                                "device's real runtime, streams latency and outputs back over gRPC.")
    p.add_argument("--version", action="version", version=f"agent {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    s = sub.add_parser("serve", help="serve the gRPC API")
    s.add_argument("--listen", default="127.0.0.1:50051",
                   help="address:port to listen on (default loopback only; the host reaches it through a tunnel). "
                        "Port 0 picks a free port (see --port-file)")
    s.add_argument("--store", default=os.path.expanduser("~/.edgebench/store"), help="artifact store directory")
    s.add_argument("--pid-file", help="write the agent's pid here")
    s.add_argument("--port-file", help="write the port actually bound here (useful with port 0)")
    s.add_argument("--quota-mb", type=float, default=0, help="store quota; least recently used artifacts are evicted")
    s.add_argument("--cpu-affinity", default="", help="CPUs for runtime workers, e.g. 2,3 (big cores)")
    s.set_defaults(func=_serve)
    i = sub.add_parser("info", help="runtimes and device facts, without starting a server")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_info)
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
