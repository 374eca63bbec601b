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
from typing import Any, Callable, Optional

from agent import __version__


def _default_address_space_mb() -> int:
    """The worker's address-space cap: the device's RAM (a model may not claim more than the device has).
    Off where CUDA is present: its driver reserves far more virtual memory than there is RAM."""
    if any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/nvhost-ctrl", "/dev/nvmap")):
        return 0
    try:
        return max(2048, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 20)))
    except (ValueError, OSError, AttributeError):
        return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from agent import auth
    from agent.limits import Limits
    from agent.server import make_server
    from agent.worker import WorkerLimits

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    big = 2**31 - 1     # "0 = no limit" for the caps below
    limits = Limits(max_runs=args.max_runs or big, max_seconds=args.max_run_seconds or float(big),
                    max_distinct_inputs=args.max_distinct_inputs or big, lock_wait_s=args.lock_wait_s,
                    infer_idle_s=args.infer_idle_s, push_idle_s=args.push_idle_s, stream_slots=max(1, args.max_streams),
                    max_message_bytes=int(args.max_message_mb * (1 << 20)) or big)
    worker_limits = WorkerLimits(
        address_space_mb=_default_address_space_mb() if args.worker_mem_mb is None else args.worker_mem_mb,
        cpu_seconds=args.worker_cpu_s, file_size_mb=args.worker_fsize_mb)
    store_options = {"max_artifact_bytes": int(args.max_artifact_mb * (1 << 20)),
                     "partial_ttl_s": args.partial_ttl_h * 3600}
    try:
        credentials = None
        if auth.tls_files_given(args.tls_cert, args.tls_key, args.tls_ca):
            credentials = auth.server_credentials(args.tls_cert, args.tls_key, args.tls_ca)
        elif not auth.is_loopback(args.listen) and not args.insecure_listen:
            raise OSError(f"refusing to listen on {args.listen} without TLS: anyone on that network could "
                          "reach the agent; give --tls-cert/--tls-key/--tls-ca (host tls init makes them) or "
                          "listen on 127.0.0.1 and use an ssh/adb tunnel")
        secret = auth.load_or_create_secret(args.auth_file or os.path.join(args.store, auth.SECRET_FILE))
        server, port = make_server(args.store, args.listen, cpu_affinity=args.cpu_affinity,
                                   quota_bytes=int(args.quota_mb * 1024 * 1024), limits=limits,
                                   worker_limits=worker_limits, store_options=store_options,
                                   interceptors=(auth.AuthInterceptor(secret),), credentials=credentials)
    except (OSError, RuntimeError, ValueError) as e:
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
    print(f"agent {__version__} listening on {host}:{port} store={Path(args.store).resolve()} pid={os.getpid()} "
          f"tls={'on' if credentials else 'off'}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    if args.pid_file:
        Path(args.pid_file).unlink(missing_ok=True)
    print("agent stopped", flush=True)
    return 0


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (v >= 0) or v != v or v in (float("inf"),):
            raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
        return v
    return parse


def _serve_options(s: argparse.ArgumentParser) -> None:
    f, i = _positive(float), _positive(int)
    s.add_argument("--auth-file", help="the agent's secret (created 0600 at first start; default STORE/agent.secret)")
    s.add_argument("--tls-cert", help="TLS: this agent's certificate (PEM); with --tls-key and --tls-ca, mutual TLS")
    s.add_argument("--tls-key", help="TLS: this agent's private key (PEM)")
    s.add_argument("--tls-ca", help="TLS: the CA that signs the hosts allowed in (PEM)")
    s.add_argument("--insecure-listen", action="store_true",
                   help="allow a non-loopback --listen without TLS (an isolated test network only)")
    g = s.add_argument_group("limits (0 = no limit where it applies)")
    g.add_argument("--max-artifact-mb", type=f, default=4096, help="largest artifact accepted (default 4096)")
    g.add_argument("--partial-ttl-h", type=f, default=24, help="unfinished uploads older than this are deleted")
    g.add_argument("--max-runs", type=i, default=1_000_000, help="cap on steady-state runs per benchmark")
    g.add_argument("--max-run-seconds", type=f, default=600, help="cap on max/min/warm-up seconds per benchmark")
    g.add_argument("--max-distinct-inputs", type=i, default=64, help="cap on random input sets per benchmark")
    g.add_argument("--lock-wait-s", type=f, default=60, help="how long a run waits for the busy device")
    g.add_argument("--infer-idle-s", type=f, default=60, help="an Infer stream silent this long is ended")
    g.add_argument("--push-idle-s", type=f, default=60, help="an upload silent this long is cut (resumable)")
    g.add_argument("--max-streams", type=i, default=24, help="concurrent uploads/runs (queries always have 8 more)")
    g.add_argument("--max-message-mb", type=f, default=64, help="largest gRPC message either way")
    g.add_argument("--worker-mem-mb", type=i, default=None,
                   help="worker address-space limit (default: the device's RAM; 0 = off; off with CUDA)")
    g.add_argument("--worker-cpu-s", type=i, default=4 * 3600, help="worker CPU-time limit in seconds (0 = off)")
    g.add_argument("--worker-fsize-mb", type=i, default=8192, help="worker file-size limit (0 = off)")


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
    s.add_argument("--quota-mb", type=_positive(float), default=0,
                   help="store quota (partial uploads count); least recently used artifacts are evicted")
    s.add_argument("--cpu-affinity", default="", help="CPUs for runtime workers, e.g. 2,3 (big cores)")
    _serve_options(s)
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
