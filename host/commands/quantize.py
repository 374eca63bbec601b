"""`host quantize`: one model -> one artifact per (platform, method), each with a manifest and a
host-side check against the FP32 source."""

from __future__ import annotations

import argparse
import contextlib
import json
import traceback
from pathlib import Path
from typing import Any, Optional

from host.quantize.base import CALIB_METHODS, METHODS, QuantizeError, QuantizeRequest, quantize_cleanly
from host.quiet import library_stream, user_err

EPILOG = """\
model sources:
  package.module:function   PyTorch factory returning an nn.Module (the current directory is on the path)
  FILE.pt2 / FILE.pt        torch.export ExportedProgram / TorchScript
  FILE.onnx                 ONNX: tensorrt takes it as it is; pytorch, executorch, tflite through onnx2torch
                            (checked against ONNX Runtime; a graph it cannot convert is skipped with the reason)
  FILE.keras / FILE.h5 / DIR  Keras model or SavedModel directory (platform tflite)

platforms and methods:
  pytorch     .ptl lite interpreter: fp32, dynamic, static (FX), qat (FX)
  executorch  .pte XNNPACK:          fp32, dynamic, static (PT2E), qat (PT2E)
  tflite      .tflite LiteRT:        fp32, dynamic, fp16, static, qat (Keras via tf_keras + tfmot)
  tensorrt    .onnx for TensorRT:    fp32, fp16 (engine flag), static (explicit Q/DQ int8), qat

data (--calib, --train, --check-data): fashion-mnist[:train|:test], digits, an image folder
(DIR/<class>/<image>) or a .npy/.npz file. Without --check-data the check uses calibration samples
held out from calibration.

QAT: --train DATA (labelled) runs the built-in loop for --epochs N; --train-fn package.module:train
is called as train(model, dataset_or_None, epochs) and fine-tunes the prepared model in place.

examples:
  host quantize --model mypkg.models:resnet8 --platform pytorch,executorch --method fp32,static \\
      --calib fashion-mnist --out artifacts/
  host quantize --model model.onnx --platform tensorrt --method static --calib data.npy \\
      --calib-method entropy --out artifacts/ --json
"""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _shape(value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {value!r}: use comma-separated integers, e.g. 1,3,32,32") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {value!r}: dimensions must be positive")
    return dims


def register(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser("quantize", help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="SRC", help="model source (see below)")
    p.add_argument("--platform", required=True, type=_csv, metavar="P[,P...]",
                   help="pytorch, executorch, tflite, tensorrt (comma-separated)")
    p.add_argument("--method", default=["fp32"], type=_csv, metavar="M[,M...]",
                   help=f"{', '.join(METHODS)} (comma-separated; default fp32)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--calib", metavar="DATA", help="calibration data for static quantization")
    p.add_argument("--calib-method", default=None, choices=CALIB_METHODS,
                   help="activation range estimator (default percentile; minmax for Keras sources, whose converter "
                        "has no percentile). Measured on EfficientNet-Lite0 (README, Choosing PTQ defaults): "
                        "percentile beat minmax on all four platforms")
    p.add_argument("--calib-samples", type=int, default=256, metavar="N", help="calibration samples (default 256)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                   help="per-channel int8 weights (default)")
    g.add_argument("--per-tensor", dest="per_channel", action="store_false", help="per-tensor int8 weights")
    p.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="pytorch x86 engine: 7-bit activations against int16 saturation on CPUs without VNNI "
                        "(auto: on only where this host lacks VNNI; measured cost on EfficientNet-Lite0: "
                        "top-1 agreement 0.46 with it, 0.71 without)")
    p.add_argument("--input-shape", type=_shape, metavar="1,3,32,32",
                   help="model input shape, when the source does not say (TorchScript, some factories)")
    p.add_argument("--train", metavar="DATA", help="labelled data for the built-in QAT loop")
    p.add_argument("--train-samples", type=int, default=0, metavar="N",
                   help="use the first N training samples (default: all)")
    p.add_argument("--train-fn", metavar="PKG.MOD:FN", help="user QAT function train(model, dataset, epochs)")
    p.add_argument("--epochs", type=int, default=1, metavar="N", help="QAT epochs (default 1)")
    p.add_argument("--float-io", action="store_true", help="TFLite static: keep float inputs/outputs (default int8 I/O)")
    p.add_argument("--target-arch", default="x86_64", choices=("x86_64", "arm64"),
                   help="target CPU: picks the PyTorch quantized engine (x86 / qnnpack)")
    p.add_argument("--preprocess", metavar="SPEC",
                   help="preprocessing of image-folder data, recorded in the manifest: "
                        "resize=HxW,mean=a/b/c,std=a/b/c,scale=S,channels=1|3 (default: RGB, pixels/255)")
    p.add_argument("--check-data", metavar="DATA", help="held-out data for the host-side check")
    p.add_argument("--check-samples", type=int, default=200, metavar="N", help="samples in the host-side check")
    p.add_argument("--task", default=None, help="classification (default) or another task name for the manifest")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--min-agreement", type=float, metavar="X",
                   help="static int8 budget: top-1 agreement with FP32 (cosine for non-classifiers) on --check-data; "
                        "the most sensitive layers stay float until it holds (every platform; tflite: PyTorch and ONNX sources)")
    b.add_argument("--max-drop", type=float, metavar="PP",
                   help="static int8 budget on labelled --check-data: at most PP points of top-1 below FP32")
    b.add_argument("--keep-float", type=_csv, metavar="LAYER[,LAYER...]",
                   help="static int8 with these source layers (module paths, e.g. from host analyze; a block's path "
                        "keeps all of it) left float, no search")
    p.add_argument("--fallback-layers", type=int, default=None, metavar="N",
                   help="rank only the N layers with the lowest SQNR for the fallback (default: all)")
    p.add_argument("--json", action="store_true", help="print the artifact list as JSON on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected conversion failures")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"[quantize] {msg}", file=user_err(), flush=True)


def _load_data(spec: Optional[str], limit: Optional[int], preprocess: Optional[str] = None) -> Any:
    if not spec:
        return None
    from host.data.datasets import Preprocess, load_dataset

    _say(f"loading data {spec}")
    pp = Preprocess.parse(preprocess) if preprocess else None
    return load_dataset(spec, limit=limit or None, pp=pp)


def run(args: argparse.Namespace) -> int:
    from host.models import load_source
    from host.quantize.registry import check_pair, get_converter

    for m in args.method:
        if m not in METHODS:
            raise QuantizeError(f"unknown method {m!r} (use one of {', '.join(METHODS)})")
    if args.calib_samples <= 0 or args.check_samples <= 0:
        raise QuantizeError("--calib-samples and --check-samples must be positive")
    _say(f"loading model {args.model}")
    source = load_source(args.model, args.input_shape, args.task or "classification")
    converters = {p: get_converter(p) for p in args.platform}

    pairs, skipped = [], []
    for p, conv in converters.items():
        for m in args.method:
            reason = conv.unsupported_reason(source, m)
            (skipped.append((p, m, reason)) if reason else pairs.append((p, m)))
    if not pairs:
        p, m, _ = skipped[0]
        check_pair(converters[p], source, m)       # raises the one-line reason
    for p, m, reason in skipped:
        _say(f"skipping {p}/{m}: {reason}")

    calib = _load_data(args.calib, args.calib_samples + args.check_samples, args.preprocess)
    train = _load_data(args.train, args.train_samples, args.preprocess)
    check = _load_data(args.check_data, args.check_samples, args.preprocess)
    if source.input_shape is None:
        ds = calib or train or check
        if ds is not None:   # e.g. TorchScript: the data says what one sample looks like
            source.input_shape = (1, *ds.x.shape[1:])
            _say(f"input shape taken from the data: {list(source.input_shape)}")

    if args.calib_method is None:
        args.calib_method = default_calib_method(source)
    budget = args.min_agreement is not None or args.max_drop is not None
    if budget:
        _check_budget_args(args, check)
    keep = _check_keep_float(args, source) if args.keep_float else []
    results: list[dict[str, Any]] = []
    failures = 0
    for p, m in pairs:
        req = QuantizeRequest(source=source, method=m, out_dir=args.out, calib=calib,
                              calib_method=args.calib_method, calib_samples=args.calib_samples,
                              per_channel=args.per_channel, input_shape=source.input_shape,
                              float_io=args.float_io, target_arch=args.target_arch, train=train,
                              reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range],
                              train_fn=args.train_fn, epochs=args.epochs, check=check, progress=_say,
                              extra={"check_samples": args.check_samples,
                                     **({"float_layers": keep} if keep and m == "static" else {})})
        _say(f"{p}/{m}: converting {source.name}")
        try:
            # Libraries print progress on stdout (onnxruntime's calibrators do); keep stdout for our output.
            with contextlib.redirect_stdout(library_stream()):
                fb = _fallback(args, req, p) if budget and m == "static" else None
                art = quantize_cleanly(converters[p], req)
            if fb is None and req.extra.get("float_layers"):
                fb = {"float_layers": req.extra["float_layers"], "budget": None, "reached": None,
                      "ranked_by": "--keep-float (named by the user, no search)"}
            if fb is not None:
                _record_fallback(art, fb)
        except QuantizeError as e:
            if len(pairs) == 1:
                raise
            failures += 1
            print(f"host quantize: error: {p}/{m}: {e}", file=user_err())
            continue
        except Exception as e:  # a library failing inside conversion: one line unless --debug
            if args.debug:
                traceback.print_exc()
            msg = f"{p}/{m} failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]} (--debug shows the traceback)"
            if len(pairs) == 1:
                raise QuantizeError(msg) from e
            failures += 1
            print(f"host quantize: error: {msg}", file=user_err())
            continue
        man = art.manifest
        for w in man.checks.get("warnings", []):
            print(f"host quantize: warning: {p}/{m}: {w}", file=user_err())
        results.append({"path": str(art.path), "manifest": str(art.manifest_path), "platform": man.platform,
                        "method": man.method, "format": man.format, "precision": man.precision,
                        "size_bytes": man.size_bytes, "sha256": man.sha256, "conversion_s": man.conversion_s,
                        "checks": man.checks})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results)
    return 1 if failures else 0


def _print_table(results: list[dict[str, Any]]) -> None:
    rows = [("platform", "method", "precision", "size", "agreement", "cosine", "warnings", "path")]
    for r in results:
        a = r["checks"].get("agreement", {})
        t1, px = a.get("top1_agreement"), a.get("pixel_agreement")   # classifiers / dense maps; else only cosine
        agr = f"{t1:.1%} top-1" if t1 is not None else (f"{px:.1%} pixel" if px is not None else "-")
        rows.append((r["platform"], r["method"], r["precision"], f"{r['size_bytes'] / 1e6:.2f} MB",
                     agr, f"{a.get('cosine', float('nan')):.4f}",
                     str(len(r["checks"].get("warnings", []))), r["path"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _check_budget_args(args: argparse.Namespace, check: Any) -> None:
    from host.analyze.session import PLATFORMS

    if check is None:
        raise QuantizeError("--min-agreement/--max-drop are measured on --check-data DATA: pass held-out data")
    if args.min_agreement is not None and not 0.0 < args.min_agreement <= 1.0:
        raise QuantizeError("--min-agreement must be in (0, 1], e.g. 0.97")
    if args.max_drop is not None and args.max_drop < 0:
        raise QuantizeError("--max-drop is in points and must be >= 0, e.g. 1.0")
    if args.fallback_layers is not None and args.fallback_layers <= 0:
        raise QuantizeError("--fallback-layers must be positive")
    if "static" not in args.method:
        raise QuantizeError("--min-agreement/--max-drop apply to --method static")
    bad = [p for p in args.platform if p not in PLATFORMS]
    if bad:
        raise QuantizeError(f"the int8 fallback supports {', '.join(PLATFORMS)}, not {', '.join(bad)}")


def default_calib_method(source: Any) -> str:
    """percentile (bench/results/calib.json: top-1 agreement +0.01 to +0.05 over minmax on every platform,
    cosine better on all); minmax for Keras sources, which TFLiteConverter calibrates by min/max only."""
    return "minmax" if getattr(source, "kind", "") == "keras" else "percentile"


def _check_keep_float(args: argparse.Namespace, source: Any) -> list[str]:
    """--keep-float names: module paths of the PyTorch source (a misspelt one would otherwise match nothing and
    quietly quantize everything); ONNX sources are checked against their graph by the converters."""
    import difflib

    if "static" not in args.method:
        raise QuantizeError("--keep-float applies to --method static")
    if not source.is_torch:
        return list(args.keep_float)
    known = [n for n, _ in source.torch_module().named_modules() if n]
    for name in args.keep_float:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=3)
            raise QuantizeError(f"--keep-float: {source.name} has no layer {name!r}"
                                + (f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else
                                   f" (layers: {', '.join(known[:6])}{', ...' if len(known) > 6 else ''})"))
    return list(args.keep_float)


def _fallback(args: argparse.Namespace, req: QuantizeRequest, platform: str) -> dict[str, Any]:
    """The layers to keep float so the budget holds (host.analyze), handed to the converter."""
    from host.analyze.session import recover

    fb = recover(req, platform, args.min_agreement, args.max_drop, args.fallback_layers, _say)
    req.extra["float_layers"] = fb["float_layers"]
    _say(f"{platform}/static: {len(fb['float_layers'])} layer(s) kept float: {', '.join(fb['float_layers']) or '-'}")
    return fb


def _record_fallback(art: Any, fb: dict[str, Any]) -> None:
    """The manifest says which layers stayed float and why, and what the search measured."""
    man = art.manifest
    man.checks["fallback"] = fb
    if fb["float_layers"]:
        man.precision = "mixed"
        man.engine["float_layers"] = fb["float_layers"]
    art.write_manifest()
