"""ONNX Runtime runner: CPU everywhere, the CUDA execution provider where the onnxruntime-gpu build has it.

It is also the stand-in for Q/DQ ONNX artifacts made for TensorRT (which builds its INT8 engines from them).
runtime_options: provider=auto|cpu|cuda (auto: CUDA when available),
optimization=auto|disable|basic|extended|all, spin=0|1 (intra-op thread spinning: on by default in ORT; off
saves power but adds wake-up latency).

optimization=auto (the default) is `all`, except for an int8 artifact of another platform (a TensorRT Q/DQ
graph): there ORT's graph optimizer would fuse DequantizeLinear -> Conv -> QuantizeLinear into its own
int8 kernels, and on x86 CPUs without VNNI those (S8S8 via vpmaddubsw) saturate int16 pair sums: the demo
classifier's Q/DQ graph agreed with fp32 on 84% of samples through them and on 99.3% with the Q/DQ nodes run
as reference ops. The stand-in must compute what the graph means, so it runs unoptimized there; describe()
says which arithmetic was used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.runtimes.base import Runner, RunnerError, RunnerOptions, TensorSpec

# ONNX type strings as onnxruntime reports them -> numpy dtype names
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def ort_spec(arg: Any, quant: dict[str, tuple[float, int]]) -> TensorSpec:
    """An onnxruntime NodeArg -> TensorSpec; symbolic/unknown dims become -1."""
    dtype = ORT_TYPES.get(arg.type)
    if dtype is None:
        raise RunnerError("bad-input", f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    scale, zp = quant.get(arg.name, (0.0, 0))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape, scale=scale, zero_point=zp)


def choose_providers(requested: str, available: list[str]) -> list[str]:
    """The provider list for a session; a clear error when CUDA is asked for but not built in."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]] if PROVIDERS["cuda"] in available else [PROVIDERS["cpu"]]
    if requested not in PROVIDERS:
        raise RunnerError("bad-input", f"unknown provider {requested!r} (use auto, cpu or cuda)")
    if PROVIDERS[requested] not in available:
        raise RunnerError("runtime-missing", f"onnxruntime here has no {PROVIDERS[requested]} "
                          f"(has {', '.join(available)}): pip install onnxruntime-gpu")
    return [PROVIDERS[requested]] if requested == "cpu" else [PROVIDERS[requested], PROVIDERS["cpu"]]


def choose_optimization(requested: str, manifest: dict[str, Any]) -> tuple[str, str]:
    """(graph optimization level, what arithmetic that means) for a session; see the module docstring."""
    level = (requested or "auto").strip().lower()
    foreign_int8 = manifest.get("platform") not in (None, "", "onnx") and manifest.get("precision") == "int8"
    if level == "auto":
        level = "disable" if foreign_int8 else "all"
    if level == "disable":
        return level, "Q/DQ as reference ops (float compute between exact quantize/dequantize)"
    return level, ("ONNX Runtime's fused int8 kernels (MLAS; on x86 without VNNI they can saturate)"
                   if foreign_int8 or manifest.get("precision") == "int8" else "ONNX Runtime kernels")


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self) -> None:
        self._sess: Any = None
        self._in_specs: list[TensorSpec] = []
        self._out_specs: list[TensorSpec] = []
        self._out_names: list[str] = []
        self._in_names: list[str] = []
        self._threads = 0
        self._providers: list[str] = []
        self._opt = "all"
        self._arithmetic = ""

    def load(self, path: str, options: RunnerOptions) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RunnerError("runtime-missing",
                              f"onnxruntime is not installed ({e}): pip install 'edgebench[onnx]'") from e
        self._ort = ort
        providers = choose_providers(options.runtime_options.get("provider", "auto"), ort.get_available_providers())
        self._path, self._options = path, options
        so = self._session_options(options)
        try:
            self._sess = ort.InferenceSession(path, sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf classes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("load-failed", f"onnxruntime could not load {path}: {first}") from e
        quant = _manifest_quant(options.manifest or {})
        self._in_specs = [ort_spec(a, quant) for a in self._sess.get_inputs()]
        self._out_specs = [ort_spec(a, quant) for a in self._sess.get_outputs()]
        self._in_names = [s.name for s in self._in_specs]
        self._out_names = [s.name for s in self._out_specs]
        self._providers = list(self._sess.get_providers())
        self._run = self._sess.run

    def _session_options(self, options: RunnerOptions) -> Any:
        ort = self._ort
        ro = options.runtime_options
        so = ort.SessionOptions()
        self._threads = int(options.threads or 0)
        if self._threads > 0:
            so.intra_op_num_threads = self._threads
            so.inter_op_num_threads = 1
        self._opt, self._arithmetic = choose_optimization(ro.get("optimization", "auto"), options.manifest or {})
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if self._opt not in levels:
            raise RunnerError("bad-input", f"unknown optimization level {self._opt!r} (use {', '.join(levels)})")
        so.graph_optimization_level = levels[self._opt]
        if ro.get("spin", "").strip().lower() in ("0", "false", "off", "no"):
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3  # warnings about unused initializers are noise on a device console
        return so

    def profile(self, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        """ONNX Runtime's session profiler on a second session of the same model and settings (profiling is a
        session option, so the measured session is never touched); one warm-up run is dropped."""
        import json
        import tempfile
        import time

        from agent.runtimes.profiling import parse_ort_trace

        with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
            so = self._session_options(self._options)
            so.enable_profiling = True
            so.profile_file_prefix = f"{tmp}/ort"
            sess = self._ort.InferenceSession(self._path, sess_options=so, providers=self._providers)
            names = [a.name for a in sess.get_inputs()]
            arrays = dict(zip(names, feed.values())) if set(feed) != set(names) else feed
            wall = []
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                sess.run(self._out_names, arrays)
                wall.append((time.perf_counter() - t0) * 1e3)
            with open(sess.end_profiling()) as f:
                trace = json.load(f)
        out = parse_ort_trace(trace, skip_runs=1)
        return out | {"wall_ms": wall[1:], "profiler": f"onnxruntime {self._ort.__version__} session profiling (per kernel)"}

    def input_specs(self) -> list[TensorSpec]:
        return list(self._in_specs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._out_specs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._run(self._out_names, feed)
        except Exception as e:  # wrong names/dtypes/shapes come back as ORT exceptions
            if len(feed) == len(self._in_names) and not all(n in feed for n in self._in_names):
                return self.infer(dict(zip(self._in_names, feed.values())))  # positional feed
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("bad-input", f"onnxruntime inference failed: {first}") from e
        return dict(zip(self._out_names, values))

    def describe(self) -> dict[str, Any]:
        ort = getattr(self, "_ort", None)
        provider = self._providers[0] if self._providers else ""
        return {
            "runtime": self.name,
            "version": str(ort.__version__) if ort else "",
            "delegate": {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}.get(provider, provider),
            "providers": self._providers,
            "threads": self._threads,
            "graph_optimization": self._opt,
            "arithmetic": self._arithmetic,
        }

    def close(self) -> None:
        self._sess = None


def _manifest_quant(manifest: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """Scale/zero-point per tensor name from the manifest (Q/DQ models usually keep float I/O: none)."""
    out = {}
    for t in list(manifest.get("inputs") or []) + list(manifest.get("outputs") or []):
        if isinstance(t, dict) and t.get("scale"):
            out[str(t.get("name"))] = (float(t["scale"]), int(t.get("zero_point", 0)))
    return out
