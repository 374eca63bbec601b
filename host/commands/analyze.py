"""`host analyze`: per-layer int8 error vs FP32, sensitivity ranking, per platform (issue 11)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from host.quantize.base import CALIB_METHODS, QuantizeError, QuantizeRequest
from host.quiet import library_stream, user_err

EPILOG = """\
For each platform: every quantizable layer (named as in the source: module path for PyTorch) with the SQNR (dB)
and cosine of its output against FP32, the quantization parameters it got and whether it runs int8; then the
check metric (top-1 agreement with FP32, cosine for non-classifiers) with only that layer kept float, most
sensitive first. Results are cached; a second run with the same inputs is instant.

example:
  host analyze --model host.zoo.models:efficientnet_lite0 --platform pytorch,executorch,tflite,tensorrt \\
      --calib photos:calib --check-data photos:check --layers 20 --html analysis.html
"""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser("analyze", help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="SRC", help="model source (as for host quantize)")
    p.add_argument("--platform", required=True, type=_csv, metavar="P[,P...]", help="pytorch, executorch, tflite, tensorrt (comma-separated)")
    p.add_argument("--method", default="static", help="static (the only one analysed)")
    p.add_argument("--calib", required=True, metavar="DATA", help="calibration data")
    p.add_argument("--calib-method", default=None, choices=CALIB_METHODS,
                   help="as for quantize (default percentile; minmax for Keras sources)")
    p.add_argument("--calib-samples", type=int, default=256, metavar="N")
    p.add_argument("--check-data", required=True, metavar="DATA", help="held-out data the layers are scored on")
    p.add_argument("--samples", type=int, default=32, metavar="N",
                   help="check samples for sensitivity (default 32: the ranking is by the output's SQNR, which "
                        "needs few)")
    p.add_argument("--numerics-samples", type=int, default=16, metavar="N",
                   help="check samples for the per-layer error (default 16)")
    p.add_argument("--layers", type=int, default=None, metavar="N",
                   help="sensitivity for only the N layers with the lowest SQNR (default: all)")
    p.add_argument("--per-tensor", dest="per_channel", action="store_false", default=True)
    p.add_argument("--preprocess", metavar="SPEC", help="preprocessing of image-folder data (as for quantize)")
    p.add_argument("--input-shape", metavar="1,3,32,32", help="model input shape when the source does not say")
    p.add_argument("--target-arch", default="x86_64", metavar="ARCH",
                   help="pytorch: the quantized engine's CPU (arm64 -> qnnpack, else x86), as for quantize")
    p.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="pytorch x86 engine: 7-bit activations (as for quantize)")
    p.add_argument("--task", default=None)
    p.add_argument("--json", action="store_true", help="everything as JSON on stdout")
    p.add_argument("--html", type=Path, metavar="FILE", help="write an HTML page: error per layer per platform")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[analyze] {msg}", file=user_err(), flush=True)


def run(args: argparse.Namespace) -> int:
    from host.analyze import report, session
    from host.commands.quantize import _load_data, _shape, default_calib_method
    from host.models import load_source

    if args.method != "static":
        raise QuantizeError(f"host analyze covers --method static, not {args.method!r}")
    for p in args.platform:
        if p not in session.PLATFORMS:
            raise QuantizeError(f"host analyze supports {', '.join(session.PLATFORMS)}, not {p!r}")
    for flag, v in (("--samples", args.samples), ("--numerics-samples", args.numerics_samples),
                    ("--calib-samples", args.calib_samples), ("--layers", 1 if args.layers is None else args.layers)):
        if v <= 0:
            raise QuantizeError(f"{flag} must be positive")
    shape = _shape(args.input_shape) if args.input_shape else None
    source = load_source(args.model, shape, args.task or "classification")
    if args.calib_method is None:
        args.calib_method = default_calib_method(source)
    calib = _load_data(args.calib, args.calib_samples, args.preprocess)
    check = _load_data(args.check_data, args.samples, args.preprocess)
    if source.input_shape is None:
        source.input_shape = (1, *calib.x.shape[1:])
    results = []
    for p in args.platform:
        req = QuantizeRequest(source=source, method="static", out_dir=Path("."), calib=calib,
                              calib_method=args.calib_method, calib_samples=args.calib_samples,
                              per_channel=args.per_channel, input_shape=source.input_shape, check=check,
                              target_arch=args.target_arch, progress=_say,
                              reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range])
        with contextlib.redirect_stdout(library_stream()):
            results.append(session.analyze(req, p, args.layers, args.samples, args.numerics_samples, _say))
    if args.html:
        report.write_html(results, args.html, f"host analyze: {source.name}")
        _say(f"wrote {args.html}")
    print(report.to_json(results) if args.json else report.text(results))
    return 0
