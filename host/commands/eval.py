"""`host eval`: accuracy measured on the device, scored on the host, stored beside the latencies."""

from __future__ import annotations

import argparse

from host.commands.common import add_db, add_json, db_path, dump_json, print_table


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("eval", help=help_, description=(
        "Stream --data through the artifact on the target's agent (Infer), get the device's outputs back and "
        "score them on the host: against the labels with the task metric (top-1/top-5, mAP@0.5 and "
        "mAP@[.5:.95], mean IoU and pixel accuracy) and against the FP32 source model's outputs on the same "
        "samples (top-1 agreement, cosine). Integer-I/O artifacts get their inputs quantized with the "
        "manifest's scale/zero-point. The result is stored in the results database for host report."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target", required=True, help="target name (see host targets list), e.g. local")
    p.add_argument("--artifact", required=True, help="artifact file with its manifest (from host quantize)")
    p.add_argument("--data", required=True,
                   help="data set: fashion-mnist[:test], shapes-det, shapes-seg, digits, DIR, FILE.npy/.npz "
                        "(built-in sets use their test split)")
    p.add_argument("--limit", type=int, default=1000, help="evaluate the first N samples (0 = all)")
    p.add_argument("--preprocess", metavar="SPEC", help="preprocessing of image-folder data: "
                   "resize=HxW,mean=a/b/c,std=a/b/c,scale=S,channels=1|3 (should match the artifact's manifest)")
    p.add_argument("--task", choices=("classification", "detection", "segmentation", "embedding", "dense"),
                   help="the model's task when its manifest does not say (a ready .tflite/.onnx); dense = any "
                        "per-pixel map, scored by per-pixel agreement and IoU against FP32")
    p.add_argument("--threads", type=int, default=0, help="runtime threads on the device (0 = default)")
    p.add_argument("--runtime", default="", help="force a runtime on the device (e.g. litert, onnxruntime)")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.errors import UserError
    from host.eval import run_eval

    if args.limit < 0:
        raise UserError("--limit must be >= 0")
    if not 0 <= args.threads <= 1024:
        raise UserError(f"--threads must be between 0 (the runtime's default) and 1024, got {args.threads}")
    rec = run_eval(args.target, args.artifact, args.data, args.limit or None, db_path(args),
                   threads=args.threads, runtime=args.runtime, preprocess=args.preprocess, task=args.task)
    if args.json:
        dump_json({k: v for k, v in rec.items() if k != "manifest"})
        return 0
    rows = [[k, f"{100 * v:.2f}%" if isinstance(v, float) else "-",
             f"{100 * rec['reference_metrics'][k]:.2f}%" if isinstance(rec["reference_metrics"].get(k), float) else "-"]
            for k, v in rec["metrics"].items() if not isinstance(v, list)]
    for k, v in rec["agreement"].items():
        rows.append([k, f"{100 * v:.2f}%" if k in ("top1_agreement", "pixel_agreement") else f"{v:.5f}", ""])
    print_table(rows, ["metric", f"{rec['target']} (device)", "FP32 source (host)"])
    print(f"{rec['artifact']}: {rec['n']} samples of {rec['dataset']}, device latency mean "
          f"{rec['latency_ms_mean']:.3f} ms; reference: {rec['reference']}; stored as eval #{rec.get('id')}")
    return 0
