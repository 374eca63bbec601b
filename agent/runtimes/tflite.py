"""TFLite runners: LiteRT (ai-edge-litert), the legacy tflite-runtime wheel, and tf.lite from TensorFlow.

All three ship the same `Interpreter` Python API, so one implementation serves them; each subclass only
says where its interpreter module comes from and how to read its version. `infer()` is what the benchmark
times, so everything that can be resolved once (tensor indices, bound methods) is resolved in `load()`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Optional

import numpy as np

from agent.runtimes.base import Runner, RunnerError, RunnerOptions, TensorSpec

_OFF = ("0", "false", "off", "no", "none")


def _flag(options: RunnerOptions, key: str, default: bool) -> bool:
    value = options.runtime_options.get(key)
    if value is None or value == "":
        return default
    return str(value).strip().lower() not in _OFF


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = 0.0, 0
    q = detail.get("quantization") or (0.0, 0)
    if q and q[0]:
        scale, zero_point = float(q[0]), int(q[1])
    # shape_signature keeps -1 for dynamic dims; shape holds what is allocated now
    sig = detail.get("shape_signature")
    shape = [int(d) for d in (sig if sig is not None and len(sig) else detail["shape"])]
    return TensorSpec(name=detail["name"], dtype=np.dtype(detail["dtype"]).name, shape=shape,
                      scale=scale, zero_point=zero_point)


class _InterpreterRunner(Runner):
    """Shared implementation; subclasses provide `_module()` and `_runtime_version()`."""

    name = ""
    extra = "tflite"

    def __init__(self) -> None:
        self._interp: Any = None
        self._inputs: list[tuple[str, int]] = []
        self._outputs: list[tuple[str, int]] = []
        self._in_specs: list[TensorSpec] = []
        self._out_specs: list[TensorSpec] = []
        self._threads = 0
        self._xnnpack = True
        self._path = ""
        self._version = ""
        self._partitions: Optional[int] = None
        self._set: Any = None
        self._get: Any = None
        self._invoke: Any = None

    # -- what differs between the three distributions ------------------------------------------
    def _module(self) -> ModuleType:  # pragma: no cover - overridden
        raise NotImplementedError

    def _resolver_types(self, mod: ModuleType) -> Any:
        return mod.OpResolverType

    def _runtime_version(self, mod: ModuleType) -> str:
        return str(getattr(mod, "__version__", ""))

    # -- Runner ---------------------------------------------------------------------------------
    def load(self, path: str, options: RunnerOptions) -> None:
        mod = self._module()
        self._path = path
        self._threads = int(options.threads or 0)
        self._xnnpack = _flag(options, "xnnpack", True)
        kwargs: dict[str, Any] = {"model_path": path}
        if self._threads > 0:
            kwargs["num_threads"] = self._threads
        if not self._xnnpack:
            # AUTO applies the default delegate (XNNPACK); this resolver is the only switch that turns it off
            kwargs["experimental_op_resolver_type"] = self._resolver_types(mod).BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = mod.Interpreter(**kwargs)
            interp.allocate_tensors()
        except (ValueError, RuntimeError, SystemError) as e:
            if isinstance(e, SystemError) and int(np.__version__.split(".")[0]) >= 2:
                # tflite-runtime's C extension, built for numpy 1, fails here under numpy 2 ("_ARRAY_API not found")
                raise RunnerError("runtime-missing", f"{self.name} does not work with numpy {np.__version__}: "
                                  "use numpy<2, or pip install 'edgebench[tflite]' for LiteRT") from e
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("load-failed", f"{self.name} could not load {path}: {first}") from e
        self._interp = interp
        ins, outs = interp.get_input_details(), interp.get_output_details()
        self._in_specs = [_spec(d) for d in ins]
        self._out_specs = [_spec(d) for d in outs]
        self._inputs = [(d["name"], int(d["index"])) for d in ins]
        self._outputs = [(d["name"], int(d["index"])) for d in outs]
        # bound methods looked up once: attribute lookups are a measurable share of a ~10 us infer
        self._set = interp.set_tensor
        self._get = interp.get_tensor
        self._invoke = interp.invoke
        self._version = self._runtime_version(mod)
        self._partitions = self._delegate_partitions(interp)

    @staticmethod
    def _delegate_partitions(interp: Any) -> Optional[int]:
        # XNNPACK being on does not mean it took the graph (tflite-runtime 2.14 leaves int8 models on the
        # builtin kernels): a delegated partition shows up as a DELEGATE node. Private API, so None if absent.
        try:
            return sum(1 for op in interp._get_ops_details() if op.get("op_name") == "DELEGATE")
        except Exception:  # noqa: BLE001 - any failure just means "unknown"
            return None

    def input_specs(self) -> list[TensorSpec]:
        return list(self._in_specs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._out_specs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_tensor = self._set
        try:
            for name, index in self._inputs:
                set_tensor(index, feed[name])
        except (KeyError, ValueError) as e:
            # slow path only on a mismatch: positional feeds, dtype/shape fixes, dynamic resize
            self._prepare_slow(feed, e)
        self._invoke()
        get = self._get
        return {name: get(index) for name, index in self._outputs}

    def _prepare_slow(self, feed: dict[str, np.ndarray], cause: Exception) -> None:
        if len(feed) != len(self._inputs):
            raise RunnerError("bad-input", f"model takes inputs {[n for n, _ in self._inputs]}, "
                                           f"got {sorted(feed)}") from cause
        by_name = all(n in feed for n, _ in self._inputs)
        arrays = [feed[n] for n, _ in self._inputs] if by_name else list(feed.values())
        resized = False
        for spec, (name, index), arr in zip(self._in_specs, self._inputs, arrays):
            arr = np.asarray(arr)
            if arr.dtype != np.dtype(spec.dtype):
                raise RunnerError("bad-input", f"input {name!r} wants {spec.dtype}, got {arr.dtype}"
                                  " (quantize float data with the spec's scale/zero-point)")
            current = list(self._interp.get_tensor(index).shape)
            if list(arr.shape) != current:
                fixed_ok = len(arr.shape) == len(spec.shape) and all(
                    s < 0 or s == a for s, a in zip(spec.shape, arr.shape))
                if not fixed_ok:
                    raise RunnerError("bad-input", f"input {name!r} takes shape {list(spec.shape)}, got {list(arr.shape)}")
                self._interp.resize_tensor_input(index, list(arr.shape))
                resized = True
        if resized:
            self._interp.allocate_tensors()
        try:
            for (_, index), arr in zip(self._inputs, arrays):
                self._set(index, np.ascontiguousarray(arr))
        except ValueError as e:
            raise RunnerError("bad-input", f"{self.name}: {e}") from e

    def describe(self) -> dict[str, Any]:
        delegated = self._xnnpack and (self._partitions is None or self._partitions > 0)
        return {
            "runtime": self.name,
            "version": self._version,
            "delegate": "xnnpack" if delegated else "none",
            "xnnpack_requested": self._xnnpack,
            "delegate_partitions": self._partitions,
            "threads": self._threads,
            "op_resolver": "auto" if self._xnnpack else "builtin_without_default_delegates",
        }

    def close(self) -> None:
        self._interp = None
        self._set = self._get = self._invoke = None


    def profile(self, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        # The op profiler (benchmark_model --enable_op_profiling) lives in the C++ benchmark tool; the Python
        # Interpreter of all three distributions has no profiler method or option, so nothing per-op is measured.
        from agent.runtimes.profiling import ProfileUnavailable

        raise ProfileUnavailable(self.name, "the Python Interpreter exposes no op profiler (only the C++ "
                                 "benchmark_model --enable_op_profiling has one); no per-op times were measured")


class LiteRTRunner(_InterpreterRunner):
    name = "litert"

    def _module(self) -> ModuleType:
        try:
            from ai_edge_litert import interpreter
        except ImportError as e:
            raise RunnerError("runtime-missing",
                              f"LiteRT is not installed ({e}): pip install 'edgebench[tflite]'") from e
        return interpreter

    def _runtime_version(self, mod: ModuleType) -> str:
        from importlib import metadata
        try:
            return metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            return ""


class TFLiteRuntimeRunner(_InterpreterRunner):
    """The legacy `tflite-runtime` wheel (older Raspberry Pi OS images); it needs numpy < 2."""

    name = "tflite-runtime"
    extra = "tflite-legacy"

    def _module(self) -> ModuleType:
        try:
            from tflite_runtime import interpreter
        except (ImportError, AttributeError) as e:
            missing = isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("tflite_runtime")
            if not missing and np.__version__.split(".")[0] != "1":  # built against numpy 1: "_ARRAY_API not found" under 2
                raise RunnerError("runtime-missing", f"tflite-runtime does not work with numpy {np.__version__} "
                                  f"({e}): use numpy<2, or pip install 'edgebench[tflite]' for LiteRT") from e
            raise RunnerError("runtime-missing", f"tflite-runtime is not installed ({e}): "
                              "pip install 'edgebench[tflite-legacy]' (needs numpy<2)") from e
        return interpreter

    def _runtime_version(self, mod: ModuleType) -> str:
        import tflite_runtime
        return str(getattr(tflite_runtime, "__version__", ""))


class TFLiteTFRunner(_InterpreterRunner):
    """tf.lite.Interpreter from full TensorFlow: the fallback on a host that has TF but not LiteRT."""

    name = "tf-lite"

    def _module(self) -> ModuleType:
        try:
            import tensorflow as tf
        except ImportError as e:
            raise RunnerError("runtime-missing",
                              f"tensorflow is not installed ({e}): pip install 'edgebench[tflite]'") from e
        return tf.lite

    def _resolver_types(self, mod: ModuleType) -> Any:
        return mod.experimental.OpResolverType

    def _runtime_version(self, mod: ModuleType) -> str:
        import tensorflow as tf
        return str(tf.__version__)


def interpreter_for(name: str) -> Optional[type[_InterpreterRunner]]:
    """The runner class registered under a runtime name (used by the overhead benchmark)."""
    return {c.name: c for c in (LiteRTRunner, TFLiteRuntimeRunner, TFLiteTFRunner)}.get(name)
