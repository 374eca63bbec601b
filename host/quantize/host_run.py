"""Run an artifact on the host through the agent's own Runner for its format.

The host-side check of every converter goes through here, so an artifact is checked by the same code
(and the same runtime options: XNNPACK on, ONNX Runtime's Q/DQ arithmetic, PyTorch's quantized engine)
that runs it on a device: one Runner contract on both sides (the host may import agent, never the reverse).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from agent import runtimes
from agent.runtimes.base import RunnerError, RunnerOptions, dequantize_output, quantize_input
from host.quantize.base import QuantizeError

# One array for a single-input model, or one array per input (in the model's input order), each (N, ...).
Inputs = Union[np.ndarray, list[np.ndarray], tuple[np.ndarray, ...]]


def load_runner(path: Any, fmt: str, manifest: Optional[dict[str, Any]] = None, runtime: Optional[str] = None,
                runtime_options: Optional[dict[str, str]] = None, threads: int = 1) -> Any:
    """The agent's Runner for `fmt`, loaded with the artifact; a runtime problem is one QuantizeError line."""
    try:
        runner = runtimes.create(runtimes.choose(fmt, forced=runtime))
        runner.load(str(path), RunnerOptions(threads=threads, runtime_options=dict(runtime_options or {}),
                                             manifest=dict(manifest or {})))
    except RunnerError as e:
        raise QuantizeError(f"the host check cannot run {path}: {e.message}") from e
    return runner


def run_artifact(path: Any, fmt: str, x: Inputs, manifest: Optional[dict[str, Any]] = None,
                 runtime: Optional[str] = None, runtime_options: Optional[dict[str, str]] = None,
                 threads: int = 1) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Outputs of the artifact over every sample (batch 1, the artifacts' batch), dequantized to float,
    one array (N, ...) per output; and the runner's describe() (runtime, version, arithmetic)."""
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    n = len(xs[0])
    runner = load_runner(path, fmt, manifest, runtime, runtime_options, threads)
    try:
        ins, outs = runner.input_specs(), runner.output_specs()
        if len(ins) != len(xs):
            raise QuantizeError(f"{path} takes {len(ins)} input(s) but the check data has {len(xs)}")
        got: list[list[np.ndarray]] = []
        for i in range(n):
            feed = {s.name: quantize_input(np.ascontiguousarray(a[i:i + 1]), s) for s, a in zip(ins, xs)}
            try:
                result = runner.infer(feed)
            except RunnerError as e:
                raise QuantizeError(f"the host check failed on sample {i} of {path}: {e.message}") from e
            # runners that cannot describe their outputs up front (the lite interpreter) name them in order
            values = [(np.asarray(result[s.name]), s) for s in outs] if outs else \
                [(np.asarray(v), None) for v in result.values()]
            got = got or [[] for _ in values]
            for k, (v, spec) in enumerate(values):
                got[k].append(dequantize_output(v, spec) if spec else v.astype(np.float32, copy=False))
        return [np.concatenate(g) for g in got], runner.describe()
    finally:
        runner.close()


def check_manifest(inputs: list[Any], **fields: Any) -> dict[str, Any]:
    """The manifest fields a Runner reads, for an artifact whose manifest is written after its check:
    input specs (runners of formats that do not record shapes need them) plus e.g. engine/precision."""
    from dataclasses import asdict

    return {"inputs": [asdict(i) for i in inputs], **fields}


def describe_line(desc: dict[str, Any]) -> str:
    """'litert 2.3.0 (xnnpack)': the runtime that computed a check, as manifests record it."""
    extra = desc.get("delegate") or desc.get("interpreter") or ""
    return f"{desc.get('runtime', '?')} {desc.get('version', '')}".strip() + (f" ({extra})" if extra else "")
