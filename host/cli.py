"""`host`: the command line. Each sub-command lives in host/commands/<name>.py and provides
`register(subparsers)`; modules are imported only when needed so `host --help` stays quick.

Every command takes --json for scripts; user errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional

from host import __version__
from host.errors import UserError
from host.quiet import user_err

# name -> one-line help; the module host.commands.<name> registers the full parser
COMMANDS = {
    "quantize": "convert one model for every platform and method, with manifests and host-side checks",
    "deploy": "push artifacts to targets, benchmark them on the device, store the results",
    "eval": "measure accuracy on the device: stream data through Infer, score on the host",
    "report": "cross-device comparison of stored results (table, csv, json, html)",
    "targets": "list, show, add and check targets (targets/*.toml)",
    "noise": "measure a device's noise floor on a fixed reference workload (shown in reports)",
    "agent": "start, stop, inspect the agent on a target",
    "zoo": "reference models: list, train, export",
    "tls": "the project CA and mutual-TLS certificates for agents reached without a tunnel",
    "analyze": "per-layer int8 error vs FP32 and sensitivity ranking, per platform",
    "profile": "per-operator profile on the device with the runtime's own profiler; --compare two artifacts",
    "compare-ops": "diff two stored per-operator profiles layer by layer (fp32 vs int8, or two devices)",
    "compare": "regression gate for CI: candidate vs baseline label, per device x artifact, from stored samples",
    "lab": "a results database shared by many hosts: device leases, queue, holders (status) and runs",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    p = _Parser(prog="host", description=(
        "Quantize one model per edge platform (PyTorch Mobile, ExecuTorch, TFLite, TensorRT), run it on real "
        "devices through light gRPC agents, and compare accuracy, latency, size and memory across devices."),
        epilog="Typical flow: host zoo train classifier; host quantize --model ... --out out/; "
               "host deploy --target local --artifact out/ --data fashion-mnist:test; host report --format html. "
               "`host COMMAND --help` explains each command.")
    p.add_argument("--version", action="version", version=f"host {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_ in COMMANDS.items():
        if only and name != only:
            sub.add_parser(name, help=help_)
            continue
        try:
            mod = importlib.import_module(f"host.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name != f"host.commands.{name.replace('-', '_')}":
                raise
            sub.add_parser(name, help=help_ + " (not available in this build)")
            continue
        mod.register(sub, help_)
    for sp in sub.choices.values():
        if not any("--verbose" in a.option_strings for a in sp._actions):
            sp.add_argument("--verbose", action="store_true",
                            help="show what third-party libraries print (otherwise kept in a log file)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from host.quiet import log_path, quiet

    verbose = bool(getattr(args, "verbose", False))
    log = None if verbose else log_path(args.command)
    try:
        with quiet(log, enabled=not verbose):
            return int(args.func(args) or 0)
    except UserError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}))
        print(f"host {args.command}: error: {e}", file=user_err())
        if log is not None and log.exists() and log.stat().st_size:
            print(f"host {args.command}: third-party output of this run: {log}", file=user_err())
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=user_err())
        return 130
    finally:
        if log is not None and log.exists() and not log.stat().st_size:
            log.unlink()


if __name__ == "__main__":
    sys.exit(main())
