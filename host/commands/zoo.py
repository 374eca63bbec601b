"""`host zoo`: the project's reference models (list, train, export to every platform)."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import dump_json, print_table


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("zoo", help=help_, description=(
        "Reference models defined in this project and trained by it on first use (no downloads), then cached "
        "under $EDGEBENCH_CACHE/zoo or ~/.cache/edgebench/zoo: a ResNet-8 classifier on Fashion-MNIST, a "
        "CenterNet-style detector and a U-Net segmenter on the synthetic shapes. As --model sources they are "
        "host.zoo.models:classifier, :detector and :segmenter. Pretrained (weights from pip packages, nothing "
        "to train): efficientnet-lite0 (host.zoo.models:efficientnet_lite0, ImageNet, data photos) and minilm "
        "(host.zoo.models:minilm, sentence embeddings, data text)."))
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION")
    lp = zsub.add_parser("list", help="the models, whether they are trained, and their test metrics")
    lp.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    tp = zsub.add_parser("train", help="train a model now (again with --force) and cache it",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tp.add_argument("name", help="classifier, detector or segmenter")
    tp.add_argument("--epochs", type=int, default=0, help="epochs (0 = the recipe's default)")
    tp.add_argument("--limit", type=int, default=0, help="train on the first N samples (0 = the recipe's default)")
    tp.add_argument("--force", action="store_true", help="retrain even when a cached model exists")
    tp.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    ep = zsub.add_parser("export", help="convert a model for platforms and methods (via host quantize's registry)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ep.add_argument("name", help="classifier, detector, segmenter, efficientnet-lite0 or minilm")
    ep.add_argument("--platform", type=_csv, default=["pytorch", "executorch", "tflite", "tensorrt"],
                    help="platforms, comma-separated")
    ep.add_argument("--method", type=_csv, default=["fp32", "dynamic", "fp16", "static", "qat"],
                    help="methods, comma-separated (pairs a platform lacks are skipped with the reason)")
    ep.add_argument("--out", type=Path, default=Path("artifacts"), help="output directory")
    ep.add_argument("--calib-samples", type=int, default=256, help="calibration samples for static int8")
    ep.add_argument("--debug", action="store_true", help="tracebacks for failing conversions")
    ep.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from host.zoo import PRETRAINED, ZOO, cache_dir, entry

    action = getattr(args, "zoo_command", None)
    if action is None:
        args._parser.print_help()
        return 2
    if action == "list":
        from host.zoo.train import cached_info

        rows = []
        for name, e in ZOO.items():
            info = cached_info(name) or {}
            rows.append({"name": name, "task": e.task, "model": f"host.zoo.models:{name}", "dataset": e.dataset,
                         "trained": bool(info), "metric": e.metric,
                         "value": (info.get("metrics") or {}).get(e.metric), "params": info.get("params"),
                         "train_s": info.get("train_s"), "description": e.description})
        for name, p in PRETRAINED.items():
            rows.append({"name": name, "task": p.task, "model": f"host.zoo.models:{p.factory}", "dataset": p.dataset,
                         "trained": True, "pretrained": p.package, "metric": p.metric, "value": None,
                         "params": None, "train_s": None, "description": p.description})
        if args.json:
            dump_json({"cache": str(cache_dir()), "models": rows})
        else:
            print_table([[r["name"], r["task"], r["dataset"],
                          f"pip {r['pretrained']}" if r.get("pretrained") else
                          "yes" if r["trained"] else "no (on first use)",
                          "-" if r["value"] is None else f"{r['metric']} {100 * r['value']:.2f}%", r["description"]]
                         for r in rows], ["name", "task", "data", "trained", "test metric", "model"])
            print(f"cache: {cache_dir()}")
        return 0
    if action == "train":
        from host.zoo.train import cached_info, train

        entry(args.name)
        info = cached_info(args.name)
        if info is None or args.force or args.epochs or args.limit:
            info = train(args.name, epochs=args.epochs or None, limit=args.limit or None)
        if args.json:
            dump_json(info)
        else:
            e = entry(args.name)
            print(f"{args.name}: {e.metric} {100 * info['metrics'][e.metric]:.2f}% on the test split "
                  f"({info['params']} params, {info['epochs']} epochs, {info['train_s']} s) -> {cache_dir()}")
        return 0
    from host.zoo.export import export

    res = export(args.name, args.platform, args.method, args.out, calib_samples=args.calib_samples,
                 debug=args.debug)
    arts = [{"path": str(a.path), "platform": a.manifest.platform, "method": a.manifest.method,
             "precision": a.manifest.precision, "size_bytes": a.manifest.size_bytes} for a in res["artifacts"]]
    skipped = [{"platform": p, "method": m, "reason": r} for p, m, r in res["skipped"]]
    if args.json:
        dump_json({"artifacts": arts, "skipped": skipped})
    else:
        print_table([[a["platform"], a["method"], a["precision"], f"{a['size_bytes'] / 1024:.1f} KiB", a["path"]]
                     for a in arts], ["platform", "method", "precision", "size", "path"])
        for s in skipped:
            print(f"skipped {s['platform']}/{s['method']}: {s['reason']}")
    return 0 if arts else 1
