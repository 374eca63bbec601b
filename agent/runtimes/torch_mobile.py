"""PyTorch Mobile runner: `.ptl` through the lite interpreter, TorchScript `.pt` through torch.jit.load.

Neither exposes input shapes or dtypes, so the input (and output) specs come from the host's manifest
(RunnerOptions.manifest["inputs"] / ["outputs"]); without them the runner still runs feeds it is given,
but `input_specs()` raises a clear error because random inputs cannot be made up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.runtimes.base import Runner, RunnerError, RunnerOptions, TensorSpec


def specs_from_manifest(items: Any) -> list[TensorSpec]:
    """Manifest tensor entries (dicts or objects with name/shape/dtype[/scale/zero_point]) -> TensorSpec."""
    specs = []
    for i, t in enumerate(items or []):
        get = t.get if isinstance(t, dict) else (lambda k, d=None, _t=t: getattr(_t, k, d))
        shape = get("shape")
        dtype = get("dtype")
        if shape is None or not dtype:
            raise RunnerError("bad-input", f"manifest tensor #{i} lacks shape or dtype: {t!r}")
        specs.append(TensorSpec(name=str(get("name") or f"input_{i}"), dtype=np.dtype(dtype).name,
                                shape=[int(d) if d is not None else -1 for d in shape],
                                scale=float(get("scale", 0.0) or 0.0), zero_point=int(get("zero_point", 0) or 0)))
    return specs


def to_numpy_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A module's return value (tensor, tuple/list of tensors, dict) -> {name: array}."""
    if isinstance(result, dict):
        items = list(result.items())
    else:
        seq = result if isinstance(result, (tuple, list)) else (result,)
        items = [(names[i] if i < len(names) else f"output_{i}", v) for i, v in enumerate(seq)]
    out = {}
    for name, v in items:
        if getattr(v, "is_quantized", False):
            v = v.dequantize()  # a model without a final DeQuantStub returns a quantized tensor
        out[str(name)] = v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)
    return out


def sniff_torch_format(path: str) -> str:
    """"ptl" when the zip holds lite-interpreter bytecode, else "torchscript" (the agent stores files unnamed)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return "ptl" if any(n.endswith("/bytecode.pkl") for n in z.namelist()) else "torchscript"
    except (OSError, zipfile.BadZipFile):
        return "ptl" if path.endswith(".ptl") else "torchscript"


class TorchMobileRunner(Runner):
    name = "torch-mobile"

    def __init__(self) -> None:
        self._module: Any = None
        self._torch: Any = None
        self._in_specs: list[TensorSpec] = []
        self._out_specs: list[TensorSpec] = []
        self._out_names: list[str] = []
        self._threads = 0
        self._kind = ""
        self._no_grad: Any = None

    def load(self, path: str, options: RunnerOptions) -> None:
        try:
            import torch
        except ImportError as e:
            raise RunnerError("runtime-missing",
                              f"torch is not installed ({e}): pip install 'edgebench[torch]'") from e
        self._torch = torch
        self._threads = int(options.threads or 0)
        if self._threads > 0:
            torch.set_num_threads(self._threads)  # per process: the worker runs one artifact
        manifest = options.manifest or {}
        self._set_quantized_engine(torch, manifest, options)
        fmt = manifest.get("format") or sniff_torch_format(path)
        try:
            if fmt == "ptl":
                from torch.jit.mobile import _load_for_lite_interpreter
                self._module = _load_for_lite_interpreter(path)
                self._kind = "lite-interpreter"
            else:
                self._module = torch.jit.load(path, map_location="cpu")
                self._module.eval()
                self._kind = "torchscript"
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("load-failed", f"torch could not load {path} as {fmt}: {first}") from e
        self._in_specs = specs_from_manifest(manifest.get("inputs"))
        self._out_specs = specs_from_manifest(manifest.get("outputs"))
        self._out_names = [s.name for s in self._out_specs]
        self._in_names = [s.name for s in self._in_specs]
        self._from_numpy = torch.from_numpy
        self._no_grad = torch.no_grad

    @staticmethod
    def _set_quantized_engine(torch: Any, manifest: dict[str, Any], options: RunnerOptions) -> None:
        # a model quantized for qnnpack (ARM) or x86/fbgemm runs only on its own engine's kernels
        engine = (options.runtime_options.get("quantized_engine")
                  or (manifest.get("engine") or {}).get("quantized_engine"))  # as host quantize records it
        if engine not in ("qnnpack", "fbgemm", "x86", "onednn"):
            return  # not a torch quantized-engine name (or none given)
        supported = list(torch.backends.quantized.supported_engines)
        if engine not in supported:
            raise RunnerError("runtime-missing", f"this torch build lacks the {engine!r} quantized engine "
                              f"(has {', '.join(supported)})")
        torch.backends.quantized.engine = engine

    def input_specs(self) -> list[TensorSpec]:
        if not self._in_specs:
            raise RunnerError("bad-input", f"{self._kind or 'torch'} artifacts do not record their input shapes: "
                              "the manifest must list inputs (re-run host quantize, or pass user inputs)")
        return list(self._in_specs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._out_specs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._in_names
        try:
            arrays = [feed[n] for n in names] if names else list(feed.values())
        except KeyError:
            if len(feed) != len(names):
                raise RunnerError("bad-input", f"model takes inputs {names}, got {sorted(feed)}") from None
            arrays = list(feed.values())  # positional: the caller used other names
        from_numpy = self._from_numpy
        try:
            with self._no_grad():
                result = self._module(*[from_numpy(a) for a in arrays])
        except (RuntimeError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("bad-input", f"{self._kind} inference failed: {first}") from e
        return to_numpy_outputs(result, self._out_names)

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        return {
            "runtime": self.name,
            "version": str(torch.__version__) if torch else "",
            "delegate": "none",
            "interpreter": self._kind,
            "threads": self._threads or (torch.get_num_threads() if torch else 0),
            "quantized_engine": str(torch.backends.quantized.engine) if torch else "",
        }

    def profile(self, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        """torch.autograd.profiler around the lite interpreter / TorchScript module: the dispatcher records every
        top-level aten/quantized op of each run (each run wrapped in a record_function so ops group by run).
        Names are the op's position in the run: neither format keeps source module paths at run time."""
        import time

        from agent.runtimes.profiling import ProfileUnavailable, parse_torch_events

        torch = self._torch
        arrays = [self._from_numpy(feed[n] if n in feed else a) for n, a in zip(self._in_names or feed, feed.values())]
        wall = []
        with torch.autograd.profiler.profile() as prof, self._no_grad():
            for i in range(runs + 1):
                t0 = time.perf_counter()
                with torch.autograd.profiler.record_function(f"edgebench_run_{i}"):
                    self._module(*arrays)
                wall.append((time.perf_counter() - t0) * 1e3)
        out = parse_torch_events(prof.function_events, "edgebench_run_", skip_runs=1)
        if not out["ops"]:
            raise ProfileUnavailable(self.name, f"torch's profiler recorded no ops inside the {self._kind} module")
        return out | {"wall_ms": wall[1:], "profiler": f"torch {torch.__version__} autograd profiler ({self._kind}, dispatcher ops)"}

    def close(self) -> None:
        self._module = None
