"""Accuracy measured on the device: stream samples through the agent's Infer, score on the host.

For each sample the host lays the image out as the artifact expects (NCHW or NHWC), quantizes it
with the manifest's input scale/zero-point when the artifact has integer I/O, sends it, and
dequantizes what comes back. The outputs are scored against the labels with the task metric
(top-1/top-5, mAP, mIoU) and against the FP32 source model's outputs on the same samples
(agreement, cosine), and an eval record is stored beside the latency results.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional

import numpy as np

from agent.runtimes.base import dequantize_output, quantize_input
from host import tasks
from host.artifacts import Artifact, TensorInfo
from host.data.datasets import Dataset, load_dataset
from host.deploy import stand_in_flags
from host.errors import UserError
from host.quiet import user_err

Log = Callable[[str], None]
# FP32 reference outputs, keyed by (source sha256, dataset name, n): every artifact of one model
# in a run (the demo evaluates a dozen) reuses one host-side pass of the source model.
_REFERENCE_CACHE: dict[tuple[str, str, int], tuple[Optional[np.ndarray], str]] = {}


class EvalError(UserError):
    """A data set that does not fit the artifact (shape, task, labels): one line."""


def _stderr(msg: str) -> None:
    print(msg, file=user_err(), flush=True)


def load_eval_data(spec: str, limit: Optional[int], preprocess: Optional[str] = None,
                   recorded: Optional[dict[str, Any]] = None) -> Dataset:
    """Built-in data sets default to their test split for evaluation (fashion-mnist -> :test);
    `preprocess` (image folders) is a Preprocess.parse spec. Without one, an image folder is preprocessed as the
    manifest `recorded` it (what calibration and the host check saw), not with a default the user must override."""
    from pathlib import Path

    from host.data.datasets import Preprocess

    pp = Preprocess.parse(preprocess) if preprocess else None
    if pp is None and recorded and Path(spec).is_dir():
        pp = Preprocess.from_dict(recorded)
    name, _, split = spec.partition(":")
    if name in ("fashion-mnist", "shapes-det", "shapes-seg", "shapes") and not split:
        return load_dataset(name, split="test", limit=limit, pp=pp)
    return load_dataset(spec, limit=limit, pp=pp)


def preprocess_mismatch(art: Artifact, ds: Dataset) -> list[str]:
    """Where the data's preprocessing differs from what the artifact was calibrated/checked with.
    Arrays from .npy/.npz are taken as already preprocessed and not compared."""
    recorded = art.manifest.preprocessing or {}
    if not recorded or ds.name.startswith("file:"):
        return []
    mine = ds.preprocess.to_dict()
    out = []
    for k in ("resize", "mean", "std", "scale", "channels"):
        if k in recorded and recorded[k] is not None and k in mine:
            a, b = recorded[k], mine[k]
            a = list(a) if isinstance(a, (list, tuple)) else a
            b = list(b) if isinstance(b, (list, tuple)) else b
            if a != b:
                out.append(f"{k}: artifact {a}, data {b}")
    return out


def input_layout(art: Artifact, ds: Dataset) -> str:
    """NCHW or NHWC: the manifest's preprocessing says so, else the input shape does."""
    lay = (art.manifest.preprocessing or {}).get("layout")
    if lay in ("NCHW", "NHWC"):
        return lay
    ins = art.manifest.inputs
    if ins and len(ins[0].shape) == 4 and ds.x.ndim == 4:
        c = ds.x.shape[1]
        if ins[0].shape[-1] == c and ins[0].shape[1] != c:
            return "NHWC"
    return "NCHW"


def quantize(x: np.ndarray, t: TensorInfo) -> np.ndarray:
    """Float data -> the artifact's input dtype (integer I/O uses the manifest's scale/zero-point)."""
    if np.dtype(t.dtype or "float32").kind != "f" and not t.scale:
        raise EvalError(f"input {t.name!r} is {t.dtype} but the manifest has no quantization scale")
    return quantize_input(x, t)   # TensorInfo carries the fields a TensorSpec does


def dequantize(y: np.ndarray, t: Optional[TensorInfo]) -> np.ndarray:
    if y.dtype.kind == "f":
        return y.astype(np.float32, copy=False)
    if t is None or not t.scale:
        raise EvalError(f"the device returned {y.dtype} outputs but the manifest has no scale to dequantize them")
    return dequantize_output(y, t)


def _pick_output(out: dict[str, np.ndarray], art: Artifact) -> tuple[np.ndarray, Optional[TensorInfo]]:
    specs = art.manifest.outputs
    for t in specs:
        if t.name in out:
            return out[t.name], t
    first = next(iter(out.values()))
    return first, (specs[0] if specs else None)


def _feeds(x: np.ndarray, art: Artifact, batch: int) -> Iterator[dict[str, np.ndarray]]:
    t = art.manifest.inputs[0]
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if len(xb) < batch:  # a fixed-batch model: pad the tail, the extra outputs are dropped
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - len(xb), axis=0)])
        yield {t.name: np.ascontiguousarray(quantize(xb, t))}


def _to_nchw(y: np.ndarray, like: Optional[np.ndarray], layout: str) -> np.ndarray:
    """Device outputs in the source's layout: transposed when they come back channels-last."""
    if y.ndim != 4:
        return y
    if like is not None:
        if y.shape[1:] == like.shape[1:]:
            return y
        if y.transpose(0, 3, 1, 2).shape[1:] == like.shape[1:]:
            return y.transpose(0, 3, 1, 2)
        return y
    return y.transpose(0, 3, 1, 2) if layout == "NHWC" else y


def reference_outputs(art: Artifact, ds: Dataset, log: Log = _stderr) -> tuple[Optional[np.ndarray], str]:
    """The FP32 source model's outputs on ds (NCHW float), run on the host; (None, why) when the
    source cannot be loaded here."""
    src = art.manifest.source or {}
    if src.get("kind") == "as given":   # host.artifact_inspect: the file itself is all there is
        return None, "a ready model file given as is: no FP32 source to compare with"
    spec = src.get("spec") or src.get("path")
    if not spec:
        return None, "the manifest names no source model"
    key = (src.get("sha256") or spec, ds.name, len(ds))
    if key in _REFERENCE_CACHE:
        return _REFERENCE_CACHE[key]
    try:
        from host.models import load_source
        from host.quantize.checks import source_reference

        shape = src.get("input_shape")
        source = load_source(spec, tuple(shape) if shape else None, art.manifest.task)
        if src.get("sha256") and source.sha256 != src["sha256"]:
            # the factory's weights or the file changed since quantization: its outputs would be a
            # different model's, so agreement and the FP32 figures would silently mean nothing
            result: tuple[Optional[np.ndarray], str] = (
                None, f"source {spec} changed since {art.path.name} was made (sha256 {source.sha256[:12]} != "
                      f"{src['sha256'][:12]}): no FP32 reference")
            _REFERENCE_CACHE[key] = result
            return result
        log(f"eval: running the FP32 source {spec} on the host for reference outputs")
        if source.is_torch or source.kind == "onnx":
            ref = source_reference(source, ds.x)
        else:  # Keras / SavedModel take channels-last images
            ref = np.asarray(source.load().predict(ds.to_layout("NHWC")))
            if ref.ndim == 4:
                ref = ref.transpose(0, 3, 1, 2)
        result = (np.asarray(ref, np.float32), f"{source.kind}:{spec}")
    except Exception as e:  # noqa: BLE001 - the reference is optional: any failure is reported, not raised
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        result = (None, f"source {spec} not usable on this host: {first}")
    _REFERENCE_CACHE[key] = result
    return result


def evaluate(client: Any, target: Any, art: Artifact, data: str | Dataset, limit: Optional[int] = 1000,
             store: Any = None, log: Log = _stderr, options: Any = None, task: Optional[str] = None) -> dict[str, Any]:
    """Run `data` through `art` on the agent behind `client` (already pushed there), score it and
    store an eval record (when `store` is given). Returns the record. `task` overrides the manifest's (a ready
    file's manifest cannot know it)."""
    m = art.manifest
    if task and task != m.task:
        from dataclasses import replace

        art = Artifact(art.path, replace(m, task=tasks.check_task(task)))
        m = art.manifest
    why = tasks.shape_mismatch(m.task, m.outputs[0].shape) if m.outputs and m.outputs[0].shape else None
    if why:   # refused before anything runs: a metric of the wrong task is a wrong number, not a low one
        raise EvalError(f"{art.path.name}: {why}")
    ds = data if isinstance(data, Dataset) else load_eval_data(data, limit)
    if limit and len(ds) > limit:
        ds = ds.take(limit)
    if not m.inputs:
        raise EvalError(f"{art.path.name} has no input spec in its manifest; produce it with host quantize")
    if m.task != ds.task and tasks.has_labels(ds.task, ds):   # unlabelled data suits any task (agreement)
        raise EvalError(f"{art.path.name} is a {m.task} model but {ds.name} is a {ds.task} data set")
    layout = input_layout(art, ds)
    x = ds.to_layout(layout)
    want = [d for d in m.inputs[0].shape[1:]]
    if want and all(d > 0 for d in want) and list(x.shape[1:]) != want:
        raise EvalError(f"{ds.name} gives samples of shape {list(x.shape[1:])} but {art.path.name} "
                        f"takes {want} ({layout})")
    batch = m.inputs[0].shape[0] if m.inputs[0].shape and m.inputs[0].shape[0] > 0 else 1
    mismatch = preprocess_mismatch(art, ds)
    if mismatch:
        log(f"eval {art.path.name}: WARNING: {ds.name} is preprocessed differently from the artifact's "
            f"calibration data ({'; '.join(mismatch)}): accuracy may be off for that reason alone")
    ref, ref_note = reference_outputs(art, ds, log)
    if ref is None and not tasks.has_labels(m.task, ds):
        # unlabelled data is scored by agreement with the FP32 source alone
        raise EvalError(f"{ds.name} has no labels and there is no FP32 reference ({ref_note}): nothing to score")

    name = art.path.name
    outs, lat = [], []
    t0 = last = time.monotonic()
    runtime: dict[str, str] = {}
    for out, ms in client.infer(m.sha256, _feeds(x, art, batch), options, runtime=runtime):
        y, spec = _pick_output(out, art)
        outs.append(dequantize(y, spec))
        lat.append(ms)
        now = time.monotonic()
        if now - last >= 2.0:
            last = now
            log(f"eval {name}: {min(len(outs) * batch, len(ds))}/{len(ds)} samples")
    if len(outs) * batch < len(ds):
        raise EvalError(f"the agent answered {len(outs) * batch} of {len(ds)} samples for {name}")
    y = np.concatenate(outs)[:len(ds)]
    y = _to_nchw(y, ref, layout)
    why = tasks.shape_mismatch(m.task, y.shape)
    if why:
        raise EvalError(f"{name}: {why}")
    metrics = _jsonable(tasks.task_metrics(m.task, y, ds))
    agree = _jsonable(tasks.agreement_metrics(m.task, y, ref)) if ref is not None and ref.shape == y.shape else {}
    ref_metrics = _jsonable(tasks.task_metrics(m.task, ref, ds)) if ref is not None else {}
    rec = {
        "target": getattr(target, "name", str(target)), "target_kind": getattr(target, "kind", ""),
        "sha256": m.sha256, "artifact": name, "model_name": m.model_name, "platform": m.platform,
        "method": m.method, "precision": m.precision, "format": m.format, "size_bytes": m.size_bytes,
        "dataset": ds.name, "n": len(ds), "task": m.task, "layout": layout, "preprocess_mismatch": mismatch,
        "runtime": runtime, "threads": getattr(options, "threads", None),
        # what the device was fed: the user's data, at this shape (never random)
        "input": {"kind": "user", "data": ds.name, "shapes": {m.inputs[0].name: [batch, *map(int, x.shape[1:])]}},
        # accuracy of a TensorRT artifact measured on another runtime is that runtime's arithmetic
        "flags": stand_in_flags(m, str(runtime.get("name", ""))),
        "metrics": metrics, "agreement": agree, "reference": ref_note, "reference_metrics": ref_metrics,
        "latency_ms_mean": float(np.mean(lat)) if lat else None, "wall_s": round(time.monotonic() - t0, 2),
        "manifest": {"inputs": [t.__dict__ for t in m.inputs], "outputs": [t.__dict__ for t in m.outputs],
                     "preprocessing": m.preprocessing, "source": m.source,
                     **({"engine": {"float_layers": m.engine["float_layers"]}}
                        if (m.engine or {}).get("float_layers") else {})},
    }
    if store is not None:
        rec["id"] = store.add_eval(rec)
    log(f"eval {name}: {_summary(rec)}")
    return rec


def _summary(rec: dict[str, Any]) -> str:
    parts = [f"{k} {100 * v:.2f}%" for k, v in rec["metrics"].items() if isinstance(v, float)]
    a = rec["agreement"]
    if a.get("top1_agreement") is not None:
        parts.append(f"agreement {100 * a['top1_agreement']:.2f}%")
    if a.get("cosine") is not None:
        parts.append(f"cosine {a['cosine']:.5f}")
    if not parts:
        parts.append("no labels and no FP32 reference: nothing to score")
    return f"n={rec['n']} " + ", ".join(parts)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and v != v:  # NaN is not JSON
            v = None
        out[k] = v
    return out


def run_eval(target_name: str, artifact: str, data: str, limit: Optional[int], db: Any,
             threads: int = 0, runtime: str = "", preprocess: Optional[str] = None,
             log: Log = _stderr, task: Optional[str] = None) -> dict[str, Any]:
    """`host eval`: connect to the target's agent, push the artifact if needed, evaluate, store."""
    from host.artifacts import load_artifact
    from host.client import AgentClient
    from host.results.store import ResultStore
    from host.targets import get_target
    from host.transports import open_transport

    target = get_target(target_name)
    art = load_artifact(artifact)
    ds = load_eval_data(data, limit, preprocess, art.manifest.preprocessing)
    store = ResultStore(db)
    transport = open_transport(target)
    try:
        address = transport.connect(log)
        with AgentClient(address) as client:
            pushed = client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
            if not pushed["already_present"]:
                log(f"eval: pushed {art.path.name} ({pushed['sent'] / 2**20:.2f} MiB) to {target.name}")
            ro = {"prefer": ",".join(target.prefer_runtimes)} if target.prefer_runtimes else {}
            opts = AgentClient.run_options(threads=threads or target.threads, runtime=runtime, runtime_options=ro)
            return evaluate(client, target, art, ds, limit, store, log, opts, task=task)
    finally:
        transport.close()
        store.close()
