"""Choosing PTQ defaults, measured: EfficientNet-Lite0 static int8 per platform and calibration variant, top-1
agreement and cosine with FP32 on the 190 real photo views of photos:check, checked by each platform's runtime.

Every row is one `host quantize --method static` run (a subprocess, one at a time), calibrated on photos:calib:

    minmax-128 / percentile-128 / entropy-128    --calib-method, 128 calibration views
    minmax-32 / minmax-256 / minmax-512          --calib-samples (256 is today's default; photos:calib has 285
                                                 views, so 512 uses 285: the row records what was used)
    per-tensor                                   --per-tensor (minmax-128 is the per-channel default)
    reduce-range-on / reduce-range-off           pytorch only: x86 engine 7-bit activations (minmax, 128)

Experimental rows (not CLI options; each a `host quantize` run in a child process of this script that changes one
thing through the Python API, labelled `exp:` in the results; agreement is always against the original FP32 model):

    exp:bnfold           BatchNorm folded into the convs in the float model first (control for exp:cle)
    exp:cle              cross-layer equalization (torch.ao.quantization._equalize's formula) of every conv pair of
                         the BN-folded float model, across ReLU6 too (quantized only if the float model still agrees
                         with the original on >= 0.9 of the views: ReLU6 is not scale-equivariant)
    exp:cle-linear       the same, only on the pairs with no activation in between (exactly function-preserving)
    exp:bias-correction  pytorch: torch.ao.quantization._correct_bias.bias_correction after convert_fx
    exp:act-asym         tensorrt: onnxruntime ActivationSymmetric=False (asymmetric int8 activations; TensorRT
                         itself takes only zero-point-0 Q/DQ, so this measures what symmetry costs on ORT)
    exp:act-sym          executorch: symmetric int8 activations in the XNNPACKQuantizer config

A failed run is a row with its one-line error (never a 0); a (platform, variant) pair that does not apply is listed
under `skipped` with the reason. Rows are written after every run into bench/results/calib.json, merged by
(platform, variant) with the rows already there unless --fresh, so a part can be rerun:

    python bench/calib_bench.py [--platforms pytorch,tensorrt] [--variants minmax-128,exp:cle] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
MODEL = "host.zoo.models:efficientnet_lite0"
CALIB, CHECK, CHECK_SAMPLES = "photos:calib", "photos:check", 190
PLATFORMS = ("pytorch", "executorch", "tflite", "tensorrt")

# name -> (group, flags, platforms it applies to)
VARIANTS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "minmax-128": ("calibration method", ["--calib-method", "minmax", "--calib-samples", "128"], PLATFORMS),
    "percentile-128": ("calibration method", ["--calib-method", "percentile", "--calib-samples", "128"], PLATFORMS),
    "entropy-128": ("calibration method", ["--calib-method", "entropy", "--calib-samples", "128"], PLATFORMS),
    "minmax-32": ("calibration samples", ["--calib-method", "minmax", "--calib-samples", "32"], PLATFORMS),
    "minmax-256": ("calibration samples", ["--calib-method", "minmax", "--calib-samples", "256"], PLATFORMS),
    "minmax-512": ("calibration samples", ["--calib-method", "minmax", "--calib-samples", "512"], PLATFORMS),
    "per-tensor": ("weights", ["--calib-method", "minmax", "--calib-samples", "128", "--per-tensor"], PLATFORMS),
    "reduce-range-on": ("reduce_range", ["--calib-method", "minmax", "--calib-samples", "128", "--reduce-range", "on"],
                        ("pytorch",)),
    "reduce-range-off": ("reduce_range", ["--calib-method", "minmax", "--calib-samples", "128",
                                          "--reduce-range", "off"], ("pytorch",)),
}
BASE = ["--calib-method", "minmax", "--calib-samples", "128"]
# experimental: name -> (what it changes, model factory or None, platforms)
EXPERIMENTS: dict[str, tuple[str, Optional[str], tuple[str, ...]]] = {
    "exp:bnfold": ("BatchNorm folded into the convs of the float model (control for exp:cle)",
                   "bench.calib_bench:efficientnet_lite0_bnfold", ("pytorch", "executorch")),
    "exp:cle": ("cross-layer equalization of the BN-folded float model (torch.ao _equalize.cross_layer_equalization "
                "per conv pair, depthwise convs through their channel axis)",
                "bench.calib_bench:efficientnet_lite0_cle", PLATFORMS),
    "exp:cle-linear": ("cross-layer equalization of the conv pairs with no activation between them (project conv -> "
                       "next expand conv / head conv), BN-folded float model",
                       "bench.calib_bench:efficientnet_lite0_cle_linear", ("pytorch", "executorch")),
    "exp:bias-correction": ("torch.ao _correct_bias.bias_correction on the FX-converted model (BN-folded float "
                            "model as reference, 32 calibration views)",
                            "bench.calib_bench:efficientnet_lite0_bnfold", ("pytorch",)),
    "exp:act-asym": ("onnxruntime quantize_static with ActivationSymmetric=False (asymmetric int8 activations)",
                     None, ("tensorrt",)),
    "exp:act-sym": ("XNNPACKQuantizer config with symmetric int8 activations (per-tensor symmetric, zero point 0)",
                    None, ("executorch",)),
}
ALL = {**{k: v[2] for k, v in VARIANTS.items()}, **{k: v[2] for k, v in EXPERIMENTS.items()}}
CLE_ITERATIONS = 20
ACTIVATIONS = {"exp:act-asym": "int8 asymmetric (ActivationSymmetric=False)",
               "exp:act-sym": "int8 symmetric (per_tensor_symmetric, [-127, 127])"}
FLOAT_GATE = 0.9   # an experimental float model agreeing less than this with the original is not quantized


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- experimental model factories (imported by `host quantize --model bench.calib_bench:...`) ----------------------

def _conv_bn_pairs(model: Any) -> list[tuple[Any, Any]]:
    pairs = [(model._conv_stem, model._bn0)]
    for blk in model._blocks:
        if blk.has_expand:
            pairs.append((blk._expand_conv, blk._bn0))
        pairs += [(blk._depthwise_conv, blk._bn1), (blk._project_conv, blk._bn2)]
    return pairs + [(model._conv_head, model._bn1)]


def efficientnet_lite0_bnfold() -> Any:
    """EfficientNet-Lite0 with every BatchNorm folded into its conv (weights scaled, bias added); the BatchNorms
    stay as exact identities (mean 0, var 1 - eps, weight 1, bias 0) so FX's and PT2E's conv+bn+ReLU6 patterns
    still match and the graphs the converters see have the same shape as the original's."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    from host.zoo.models import efficientnet_lite0

    model = efficientnet_lite0()
    with torch.no_grad():
        for conv, bn in _conv_bn_pairs(model):
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
            conv.weight = torch.nn.Parameter(w.detach().clone())
            conv.bias = torch.nn.Parameter(b.detach().clone())
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
    return model.eval()


def cle_pairs(model: Any, linear_only: bool = False) -> list[tuple[str, Any, Any, int]]:
    """(label, conv1, conv2, input axis of conv2) for every pair CLE may rescale: conv -> (ReLU6) -> depthwise
    (axis 0: a depthwise conv's channel is its output axis), depthwise -> (ReLU6) -> project (axis 1), a project
    conv feeding the next block's expand conv directly (no residual add in between), the last project ->
    head conv. Residual adds end a chain (both branches would need the same scale)."""
    pairs = []
    prev, prev_name = model._conv_stem, "_conv_stem"
    for i, blk in enumerate(model._blocks):
        n = f"_blocks.{i}"
        first = blk._expand_conv if blk.has_expand else blk._depthwise_conv
        if prev is not None:
            pairs.append((f"{prev_name}->{n}.{'_expand_conv' if blk.has_expand else '_depthwise_conv'}", prev, first,
                          1 if blk.has_expand else 0))
        if blk.has_expand:
            pairs.append((f"{n}._expand_conv->{n}._depthwise_conv", blk._expand_conv, blk._depthwise_conv, 0))
        pairs.append((f"{n}._depthwise_conv->{n}._project_conv", blk._depthwise_conv, blk._project_conv, 1))
        nxt_residual = i + 1 < len(model._blocks) and model._blocks[i + 1].residual
        # the project output goes on to a residual add when the next block has one, or this block adds itself
        prev, prev_name = (None, "") if (blk.residual or nxt_residual) else (blk._project_conv, f"{n}._project_conv")
    if prev is not None:
        pairs.append((f"{prev_name}->_conv_head", prev, model._conv_head, 1))
    # a project conv has no activation after it; every other first conv of a pair is followed by ReLU6
    return [p for p in pairs if p[0].split("->")[0].endswith("_project_conv")] if linear_only else pairs


def equalize_pair(m1: Any, m2: Any, input_axis: int) -> int:
    """torch.ao's cross_layer_equalization (scale s = sqrt(range1 / range2) per channel; m1's output channel and
    bias divided by s, m2's input channel multiplied by it), except that channels whose weights have no range in
    either conv keep s = 1: torch.ao's version divides by such a range and turns EfficientNet-Lite0 into NaN (13 of
    its pairs have a dead channel). Returns how many channels were left alone."""
    import torch
    from torch.ao.quantization._equalize import channel_range

    r1, r2 = channel_range(m1.weight, 0), channel_range(m2.weight, input_axis)
    dead = (r1 < 1e-8) | (r2 < 1e-8)
    s = torch.where(dead, torch.ones_like(r1), torch.sqrt(r1 / torch.where(dead, torch.ones_like(r2), r2)))
    shape1, shape2 = [1] * m1.weight.ndim, [1] * m2.weight.ndim
    shape1[0], shape2[input_axis] = -1, -1
    m1.weight.copy_(m1.weight / s.reshape(shape1))
    if m1.bias is not None:
        m1.bias.copy_(m1.bias / s)
    m2.weight.copy_(m2.weight * s.reshape(shape2))
    return int(dead.sum())


def efficientnet_lite0_cle(linear_only: bool = False) -> Any:
    """The BN-folded network after cross-layer equalization (Nagel et al. 2019, torch.ao's formula), iterated
    CLE_ITERATIONS times over the pairs of cle_pairs(). torch.ao's `equalize()` refuses a depthwise conv as the
    second module of a pair (it always takes input axis 1), and its cross_layer_equalization gives NaN on this
    network's dead channels, so the pairs go through equalize_pair(). ReLU6 is not scale-equivariant (its clamp
    at 6 moves with the scale), so the result is not exactly the FP32 network: the bench measures how far it moved."""
    import torch

    model = efficientnet_lite0_bnfold()
    with torch.no_grad():
        for _ in range(CLE_ITERATIONS):
            for _label, m1, m2, axis in cle_pairs(model, linear_only):
                equalize_pair(m1, m2, axis)
    return model.eval()


def efficientnet_lite0_cle_linear() -> Any:
    """efficientnet_lite0_cle on the pairs without an activation between them only (function-preserving)."""
    return efficientnet_lite0_cle(linear_only=True)


def efficientnet_lite0_relu() -> Any:
    """The BN-folded network with ReLU instead of ReLU6 (the DFQ paper's recipe for MobileNetV2, under which
    CLE is exact); measured for its float fidelity only."""
    import torch

    model = efficientnet_lite0_bnfold()
    for m in model.modules():
        if isinstance(getattr(m, "act", None), torch.nn.ReLU6):
            m.act = torch.nn.ReLU()
    return model


def torch_cle_reason() -> Optional[str]:
    """What torch.ao's own cross_layer_equalization (right axes) does to the BN-folded network."""
    import torch
    from torch.ao.quantization._equalize import cross_layer_equalization

    model = efficientnet_lite0_bnfold()
    with torch.no_grad():
        for _label, m1, m2, axis in cle_pairs(model):
            cross_layer_equalization(m1, m2, output_axis=0, input_axis=axis)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    return f"non-finite weights in {len(bad)} tensors after one pass (e.g. {bad[0]})" if bad else None


for _f in (efficientnet_lite0_bnfold, efficientnet_lite0_cle, efficientnet_lite0_cle_linear):
    _f.input_shape = (1, 3, 224, 224)   # type: ignore[attr-defined]
    _f.task = "classification"          # type: ignore[attr-defined]


def torch_equalize_reason() -> Optional[str]:
    """What torch.ao's own equalize() says when given an MBConv's (expand, depthwise, project) chain."""
    from torch.ao.quantization._equalize import equalize

    model = efficientnet_lite0_bnfold()
    try:
        equalize(model, [["_blocks.1._expand_conv", "_blocks.1._depthwise_conv", "_blocks.1._project_conv"]],
                 inplace=True)
    except Exception as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None


def float_fidelity(factory: Any, n: int = CHECK_SAMPLES) -> dict[str, Any]:
    """The modified float model against the original FP32 model on photos:check."""
    import numpy as np
    import torch

    from host.data import photos
    from host.zoo.models import efficientnet_lite0

    x = torch.from_numpy(np.ascontiguousarray(photos.load("check", n, None).x[:n]))
    with torch.no_grad():
        ref = torch.cat([efficientnet_lite0()(b) for b in x.split(50)])
        got = torch.cat([factory()(b) for b in x.split(50)])
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).float().mean()),
            "cosine": float(cos.mean()), "max_abs": float((ref - got).abs().max()), "samples": int(len(x))}


FACTORIES = {"exp:bnfold": efficientnet_lite0_bnfold, "exp:cle": efficientnet_lite0_cle,
             "exp:cle-linear": efficientnet_lite0_cle_linear, "relu6->relu": efficientnet_lite0_relu}


# -- child: one experimental `host quantize` run with one thing patched -------------------------------------------

def _note(msg: str) -> None:
    """A line for the results row (inside `host quantize`, sys.stderr goes to its log file)."""
    from host.quiet import user_err

    print(f"[calib_bench] {msg}", file=user_err(), flush=True)


def _reference_is_original() -> None:
    """The host check compares the artifact with the original FP32 EfficientNet-Lite0, not the modified source."""
    from host.quantize import checks
    from host.zoo.models import efficientnet_lite0

    original = efficientnet_lite0()
    checks.source_reference = lambda source, x, batch_size=50: checks.torch_outputs(original, x, batch_size)


def _patch_bias_correction(samples: int = 32, batch: int = 16) -> None:
    import numpy as np
    import torch
    import torch.ao.ns._numeric_suite as ns
    import torch.ao.quantization.quantize_fx as qfx
    from torch.ao.quantization._correct_bias import bias_correction

    from host.data import photos

    convert = qfx.convert_fx

    def convert_then_correct(prepared: Any, *a: Any, **kw: Any) -> Any:
        quantized = convert(prepared, *a, **kw)
        x = torch.from_numpy(np.ascontiguousarray(photos.load("calib", samples, None).x[:samples]))
        before = {n: m.bias().detach().clone() for n, m in quantized.named_modules()
                  if callable(getattr(m, "bias", None)) and m.bias() is not None}
        bias_correction(efficientnet_lite0_bnfold(), quantized, [(b,) for b in x.split(batch)])
        for name, m in list(quantized.named_modules()):   # take the numeric-suite Shadow wrappers out again
            if isinstance(m, ns.Shadow):
                parent, _, child = name.rpartition(".")
                setattr(quantized.get_submodule(parent) if parent else quantized, child, m.orig_module)
        after = {n: m.bias() for n, m in quantized.named_modules() if n in before}
        changed = [n for n in before if not torch.equal(before[n], after[n])]
        _note(f"bias_correction changed the bias of {len(changed)} of {len(before)} quantized modules "
            f"with a bias: {', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}")
        if not changed:
            raise RuntimeError(f"bias_correction changed no bias (of {len(before)} quantized modules with one)")
        return quantized

    qfx.convert_fx = convert_then_correct


def _patch_ort_asymmetric() -> None:
    from host.quantize import tensorrt

    base = tensorrt.ort_extra_options
    def asymmetric(method: str) -> dict[str, Any]:
        _note("onnxruntime extra_options ActivationSymmetric=False")
        return {**base(method), "ActivationSymmetric": False}

    tensorrt.ort_extra_options = asymmetric


def _patch_xnnpack_symmetric_activations() -> None:
    import dataclasses

    import torch

    from host.quantize import executorch

    base = executorch.xnnpack_quantization_config

    def symmetric(method: str, per_channel: bool, qat: bool = False) -> Any:
        cfg = base(method, per_channel, qat)
        act = dataclasses.replace(cfg.input_activation, qscheme=torch.per_tensor_symmetric, quant_min=-127,
                                  quant_max=127)
        _note(f"XNNPACKQuantizer activations {act.qscheme} [{act.quant_min}, {act.quant_max}]")
        return dataclasses.replace(cfg, input_activation=act, output_activation=act)

    executorch.xnnpack_quantization_config = symmetric


def child(experiment: str, argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    _reference_is_original()
    {"exp:bnfold": lambda: None, "exp:cle": lambda: None, "exp:cle-linear": lambda: None,
     "exp:bias-correction": _patch_bias_correction,
     "exp:act-asym": _patch_ort_asymmetric, "exp:act-sym": _patch_xnnpack_symmetric_activations}[experiment]()
    from host.cli import main as host_main

    return host_main(argv)


# -- parent -------------------------------------------------------------------------------------------------------

def one_run(platform: str, variant: str, out: Path) -> dict[str, Any]:
    exp = EXPERIMENTS.get(variant)
    model = (exp[1] if exp and exp[1] else MODEL)
    flags = BASE if exp else VARIANTS[variant][1]
    args = ["quantize", "--model", model, "--platform", platform, "--method", "static", "--calib", CALIB,
            *flags, "--check-data", CHECK, "--check-samples", str(CHECK_SAMPLES), "--out", str(out), "--json"]
    cmd = ([sys.executable, str(Path(__file__).resolve()), "--child", variant, "--", *args] if exp
           else [sys.executable, "-m", "host.cli", *args])
    row: dict[str, Any] = {"platform": platform, "variant": variant,
                           "group": "experimental" if exp else VARIANTS[variant][0],
                           "flags": " ".join(flags) + (f"  [{exp[0]}]" if exp else ""),
                           "model": model}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    try:
        got = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        got = None
    errors = [ln.split("error: ", 1)[-1] for ln in p.stderr.splitlines() if "error:" in ln]
    notes = [ln.split("] ", 1)[-1] for ln in p.stderr.splitlines() if ln.startswith("[calib_bench]")]
    if notes:
        row["notes"] = notes
    if isinstance(got, list) and got:
        a = got[0]
        agr = a["checks"].get("agreement", {})
        man = json.loads(Path(a["manifest"]).read_text())
        cal = man.get("calibration", {})
        row.update(top1_agreement=agr.get("top1_agreement"), cosine=agr.get("cosine"),
                   check_samples=agr.get("samples"), conversion_s=a.get("conversion_s"),
                   calibration={k: cal.get(k) for k in ("method", "samples", "per_channel", "observer",
                                                         "reduce_range", "activations", "weights") if k in cal},
                   runtime=a["checks"].get("runtime"), size_mb=round(a["size_bytes"] / 1e6, 2))
        if exp:
            row["reference"] = "original FP32 EfficientNet-Lite0 (host check patched to compare against it)"
        if variant in ACTIVATIONS:   # the converters write fixed text there, not what the patched config did
            row["calibration"]["activations"] = ACTIVATIONS[variant]
    else:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        err = (got or {}).get("error") if isinstance(got, dict) else None
        row["error"] = err or (errors[-1] if errors else f"exit {p.returncode}: {tail}")
    return row


def fmt_row(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"{r['platform']:<11}{r['variant']:<21}error: {r['error']}"
    n = (r.get("calibration") or {}).get("samples")
    return (f"{r['platform']:<11}{r['variant']:<21}{r['top1_agreement']:>7.3f}{r['cosine']:>8.4f}"
            f"{'' if n is None else n:>6}{r['wall_s']:>8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="variants: " + ", ".join(ALL))
    ap.add_argument("--platforms", default=",".join(PLATFORMS), help="comma-separated: " + ", ".join(PLATFORMS))
    ap.add_argument("--variants", default=",".join(ALL), help="comma-separated variant names (default: all)")
    ap.add_argument("--fresh", action="store_true", help="start a new results file instead of merging into it")
    ap.add_argument("--keep", type=Path, help="keep the artifacts in this directory")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        return child(args.child, [a for a in rest if a != "--"])
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    platforms = [p for p in args.platforms.split(",") if p]
    variants = [v for v in args.variants.split(",") if v]
    bad = [p for p in platforms if p not in PLATFORMS] + [v for v in variants if v not in ALL]
    if bad:
        ap.error(f"unknown platform/variant: {', '.join(bad)} (platforms: {', '.join(PLATFORMS)}; "
                 f"variants: {', '.join(ALL)})")

    sys.path.insert(0, str(ROOT / "bench"))
    from common import RESULTS, write_result

    todo, skipped = [], []
    for v in variants:
        for p in platforms:
            if p in ALL[v]:
                todo.append((p, v))
            else:
                skipped.append({"platform": p, "variant": v, "reason": f"{v} applies only to {', '.join(ALL[v])}"})
    for s in skipped:
        say(f"skipping {s['platform']}/{s['variant']}: {s['reason']}")

    old = {} if args.fresh or not (RESULTS / "calib.json").exists() else json.loads((RESULTS / "calib.json").read_text())
    rows = {(r["platform"], r["variant"]): r for r in old.get("rows", [])}
    skips = {(x["platform"], x["variant"]): x for x in [*old.get("skipped", []), *skipped]}
    extra = old.get("experimental", {})
    if any(v in FACTORIES for _, v in todo):
        sys.path.insert(0, str(ROOT))
        say("experimental: float fidelity of the modified float models on photos:check ...")
        model = efficientnet_lite0_bnfold()
        extra = {**extra, "torch_ao_equalize_on_mbconv": torch_equalize_reason() or "accepted",
                 "torch_ao_cross_layer_equalization": torch_cle_reason() or "finite",
                 "cle_iterations": CLE_ITERATIONS, "cle_pairs": [p[0] for p in cle_pairs(model)],
                 "cle_linear_pairs": [p[0] for p in cle_pairs(model, True)],
                 "float_vs_original": {name: float_fidelity(f) for name, f in FACTORIES.items()}}
        say(f"  {json.dumps(extra['float_vs_original'])}")

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.split("\n")
    except OSError:
        commit, dirty = "", []
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgebench-calibbench-"))
    t_all = time.perf_counter()

    def save() -> Path:
        order = {k: i for i, k in enumerate(ALL)}
        return write_result("calib", {
            "model": MODEL, "calib": CALIB, "check": CHECK, "check_samples": CHECK_SAMPLES,
            "metric": "top-1 agreement and mean cosine of the int8 artifact's logits with FP32, run by the "
                      "platform's runtime (host check)",
            "git": {"commit": commit, "modified": [d[3:] for d in dirty if d.strip()]},
            "todays_defaults": {"calib_method": "minmax", "calib_samples": 256, "per_channel": True,
                                "reduce_range": "auto (off where the host has VNNI)"},
            "rows": sorted(rows.values(), key=lambda r: (PLATFORMS.index(r["platform"]), order[r["variant"]])),
            "skipped": [x for k, x in skips.items() if k not in rows], "experimental": extra,
            "last_run_s": round(time.perf_counter() - t_all, 1)})

    for i, (p, v) in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] {p} {v} ...")
        fid = extra.get("float_vs_original", {}).get(v)
        if fid is not None and fid["top1_agreement"] < FLOAT_GATE:
            r = {"platform": p, "variant": v, "group": "experimental", "flags": " ".join(BASE) +
                 f"  [{EXPERIMENTS[v][0]}]", "model": EXPERIMENTS[v][1],
                 "error": f"not quantized: the modified float model itself agrees with the original FP32 on only "
                          f"{fid['top1_agreement']:.3f} top-1 (cosine {fid['cosine']:.3f}) of {CHECK}; ReLU6 "
                          f"is not scale-equivariant (ReLU6->ReLU, under which CLE is exact, alone gives "
                          f"{extra['float_vs_original']['relu6->relu']['top1_agreement']:.3f})"}
        else:
            r = one_run(p, v, root / f"{p}-{v.replace(':', '_')}")
        r["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
        rows[(p, v)] = r
        say("  " + fmt_row(r))
        save()
    path = save()
    print(f"\nEfficientNet-Lite0 static int8 vs FP32 on {CHECK} ({CHECK_SAMPLES} views)")
    print(f"{'platform':<11}{'variant':<21}{'top-1':>7}{'cosine':>8}{'calib':>6}{'wall s':>8}")
    for r in json.loads(path.read_text())["rows"]:
        print(fmt_row(r))
    print(f"\nwritten {path} ({time.perf_counter() - t_all:.0f} s)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
