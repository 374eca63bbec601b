"""TensorRT runner: builds an engine on the device from an `.onnx` artifact and runs it, timing H2D / compute / D2H.

UNVERIFIED: written against the TensorRT 10 Python API (named I/O tensors, execute_async_v3, explicit Q/DQ
INT8), but TensorRT cannot be installed anywhere this project is developed, so only the pure parts below
(flag mapping, cache keys, the missing-runtime error) are tested. Run it on a real Jetson before trusting it.

Engines are cached under RunnerOptions.cache_dir keyed by (artifact sha256, TensorRT version, GPU name,
flags), so a second deploy of the same artifact to the same device never rebuilds; the builder's timing
cache is kept beside them (per TensorRT version and GPU) so even a rebuild with new flags is quicker.
Device buffers and CUDA events come from torch (if it has CUDA) or cuda-python.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from typing import Any, Optional

import numpy as np

from agent.runtimes.base import Runner, RunnerError, RunnerOptions, TensorSpec

MISSING = ("TensorRT is not installed on this device: it ships with NVIDIA JetPack on a Jetson (make the agent's "
           "venv with --system-site-packages) or as the 'tensorrt' wheel from NVIDIA's index; "
           "pip install 'edgebench[tensorrt]' for the rest")


def build_flags(manifest: dict[str, Any]) -> dict[str, Any]:
    """The builder settings for an artifact, from its manifest's precision and engine fields.

    fp32 -> no precision flag (TF32 stays TensorRT's default unless engine.tf32 is false);
    fp16 -> FP16; int8 (explicit Q/DQ ONNX) -> INT8 plus FP16 for the layers left unquantized,
    unless engine.strongly_typed, where the ONNX types decide and precision flags are not allowed.
    """
    precision = str(manifest.get("precision") or "fp32").lower()
    engine = dict(manifest.get("engine") or {})
    strongly_typed = bool(engine.get("strongly_typed", False))
    flags: set[str] = set()
    if strongly_typed:
        pass  # TensorRT rejects FP16/INT8 builder flags on a strongly typed network
    elif precision == "fp16":
        flags.add("FP16")
    elif precision in ("int8", "mixed"):
        flags.add("INT8")
        if engine.get("fp16_fallback", True):
            flags.add("FP16")
    elif precision in ("fp32", "unknown", ""):
        pass
    elif precision == "dynamic-int8":
        raise RunnerError("bad-input", "TensorRT cannot run dynamic-int8 artifacts: quantize statically (Q/DQ ONNX)")
    else:
        raise RunnerError("bad-input", f"TensorRT has no mapping for precision {precision!r}")
    if engine.get("tf32") is False:
        flags.add("-TF32")  # cleared: an honest fp32 baseline on Ampere+ GPUs
    dla_core = engine.get("dla_core")
    if dla_core is not None:
        flags.add("GPU_FALLBACK")  # layers the DLA cannot run fall back to the GPU instead of failing the build
    return {
        "flags": sorted(flags),
        "strongly_typed": strongly_typed,
        "dla_core": int(dla_core) if dla_core is not None else None,
        "workspace_mb": int(engine.get("workspace_mb", 1024)),
        "opt_level": int(engine["builder_optimization_level"]) if "builder_optimization_level" in engine else None,
    }


def cache_key(sha256: str, trt_version: str, gpu_name: str, flags: dict[str, Any]) -> str:
    """Stable key of an engine: changing the artifact, TensorRT, the GPU or any build setting changes it."""
    if not sha256:
        raise RunnerError("bad-input", "an engine cache key needs the artifact's sha256")
    blob = json.dumps({"sha256": sha256, "trt": trt_version, "gpu": gpu_name, "flags": flags},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def engine_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, "trt-engines", f"{key}.engine")


def timing_cache_path(cache_dir: str, trt_version: str, gpu_name: str) -> str:
    # tactic timings are only valid for the TensorRT version and GPU that measured them
    return os.path.join(cache_dir, "trt-engines", f"timing-{_slug(trt_version)}-{_slug(gpu_name)}.cache")


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RunnerError("runtime-missing", f"{MISSING} ({e})") from e
    return trt


class _TorchCuda:
    """Device buffers, a stream and timing events through torch.cuda."""

    def __init__(self) -> None:
        import torch
        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA device")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.handle = self.stream.cuda_stream

    def gpu_name(self) -> str:
        return str(self.torch.cuda.get_device_name(0))

    def alloc(self, shape: list[int], dtype: np.dtype) -> tuple[Any, Any, int]:
        t = self.torch
        tdt = t.from_numpy(np.zeros(1, dtype)).dtype
        host = t.empty(shape, dtype=tdt, pin_memory=True)
        dev = t.empty(shape, dtype=tdt, device="cuda")
        return host, dev, int(dev.data_ptr())

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, ev: Any) -> None:
        ev.record(self.stream)

    def h2d(self, host: Any, dev: Any, arr: np.ndarray) -> None:
        host.numpy()[...] = arr
        with self.torch.cuda.stream(self.stream):
            dev.copy_(host, non_blocking=True)

    def d2h(self, host: Any, dev: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            host.copy_(dev, non_blocking=True)

    def sync(self) -> None:
        self.stream.synchronize()

    @staticmethod
    def elapsed_ms(a: Any, b: Any) -> float:
        return float(a.elapsed_time(b))

    @staticmethod
    def to_numpy(host: Any) -> np.ndarray:
        return host.numpy().copy()


class _CudaPython:
    """The same through cuda-python's runtime bindings (what a Jetson without torch has)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6 layout
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())
        self.handle = int(self.stream)

    def _ok(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RunnerError("load-failed", f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def gpu_name(self) -> str:
        props = self._ok(self.rt.cudaGetDeviceProperties(0))
        name = props.name
        return name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)

    def alloc(self, shape: list[int], dtype: np.dtype) -> tuple[Any, Any, int]:
        host = np.empty(shape, dtype)
        ptr = self._ok(self.rt.cudaMalloc(max(1, host.nbytes)))
        return host, ptr, int(ptr)

    def event(self) -> Any:
        return self._ok(self.rt.cudaEventCreate())

    def record(self, ev: Any) -> None:
        self._ok(self.rt.cudaEventRecord(ev, self.stream))

    def h2d(self, host: np.ndarray, dev: Any, arr: np.ndarray) -> None:
        host[...] = arr
        self._ok(self.rt.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, host: np.ndarray, dev: Any) -> None:
        self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return float(self._ok(self.rt.cudaEventElapsedTime(a, b)))

    @staticmethod
    def to_numpy(host: np.ndarray) -> np.ndarray:
        return host.copy()


def _cuda() -> Any:
    errors = []
    for backend in (_TorchCuda, _CudaPython):
        try:
            return backend()
        except ImportError as e:
            errors.append(str(e))
    raise RunnerError("runtime-missing", "TensorRT needs CUDA buffers from torch (with CUDA) or cuda-python: "
                      f"pip install cuda-python ({'; '.join(errors)})")


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self) -> None:
        self._trt: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._cuda: Any = None
        self._in: list[tuple[TensorSpec, Any, Any]] = []
        self._out: list[tuple[TensorSpec, Any, Any]] = []
        self._settings: dict[str, Any] = {}
        self._key = ""
        self._cached = False
        self._build_s = 0.0
        self._gpu = ""
        self.last_timings: dict[str, float] = {}

    def load(self, path: str, options: RunnerOptions) -> None:
        trt = self._trt = import_tensorrt()
        manifest = options.manifest or {}
        self._settings = build_flags(manifest)
        self._cuda = _cuda()
        self._gpu = self._cuda.gpu_name()
        sha = manifest.get("sha256") or _sha256(path)
        self._key = cache_key(sha, trt.__version__, self._gpu, self._settings)
        cache_dir = options.cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), ".cache")
        epath = engine_path(cache_dir, self._key)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if self._settings["dla_core"] is not None:
            runtime.DLA_core = self._settings["dla_core"]
        blob = None
        if os.path.isfile(epath):
            with open(epath, "rb") as f:
                blob = f.read()
            self._cached = True
        else:
            t0 = time.perf_counter()
            blob = self._build(trt, logger, path, timing_cache_path(cache_dir, trt.__version__, self._gpu))
            self._build_s = time.perf_counter() - t0
            _atomic_write(epath, blob)
        self._engine = runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise RunnerError("load-failed", f"TensorRT could not deserialize the engine {epath}; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        self._bind(trt, manifest)

    def _build(self, trt: Any, logger: Any, onnx_path: str, tc_path: str) -> bytes:
        s = self._settings
        builder = trt.Builder(logger)
        net_flags = 0
        if s["strongly_typed"]:
            net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(net_flags)
        parser = trt.OnnxParser(network, logger)
        with open(onnx_path, "rb") as f:
            if not parser.parse(f.read()):
                errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RunnerError("load-failed", f"TensorRT's ONNX parser rejected {onnx_path}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s["workspace_mb"] << 20)
        for name in s["flags"]:
            if name.startswith("-"):
                config.clear_flag(getattr(trt.BuilderFlag, name[1:]))
            else:
                config.set_flag(getattr(trt.BuilderFlag, name))
        if s["dla_core"] is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = s["dla_core"]
        if s["opt_level"] is not None:
            config.builder_optimization_level = s["opt_level"]
        # dynamic dims: one profile pinned at 1 (the agent benchmarks batch 1; a bigger batch is a new artifact)
        profile = None
        for i in range(network.num_inputs):
            t = network.get_input(i)
            if any(d < 0 for d in t.shape):
                fixed = [d if d >= 0 else 1 for d in t.shape]
                profile = profile or builder.create_optimization_profile()
                profile.set_shape(t.name, fixed, fixed, fixed)
        if profile is not None:
            config.add_optimization_profile(profile)
        old = b""
        if os.path.isfile(tc_path):
            with open(tc_path, "rb") as f:
                old = f.read()
        cache = config.create_timing_cache(old)
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RunnerError("load-failed", f"TensorRT failed to build an engine from {onnx_path} "
                              f"with {s['flags'] or 'default'} flags (see the agent log)")
        _atomic_write(tc_path, bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def _bind(self, trt: Any, manifest: dict[str, Any]) -> None:
        quant = {t.get("name"): t for t in list(manifest.get("inputs") or []) + list(manifest.get("outputs") or [])
                 if isinstance(t, dict)}
        ctx, eng = self._context, self._engine
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            is_input = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = list(eng.get_tensor_shape(name))
            if is_input and any(d < 0 for d in shape):
                shape = [d if d >= 0 else 1 for d in shape]
                ctx.set_input_shape(name, shape)
            if not is_input:
                shape = list(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(name)))
            q = quant.get(name) or {}
            spec = TensorSpec(name=name, dtype=dtype.name, shape=shape, scale=float(q.get("scale", 0.0) or 0.0),
                              zero_point=int(q.get("zero_point", 0) or 0))
            host, dev, ptr = self._cuda.alloc(shape, dtype)
            ctx.set_tensor_address(name, ptr)
            (self._in if is_input else self._out).append((spec, host, dev))
        self._events = [self._cuda.event() for _ in range(4)]

    def input_specs(self) -> list[TensorSpec]:
        return [s for s, _, _ in self._in]

    def output_specs(self) -> list[TensorSpec]:
        return [s for s, _, _ in self._out]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cu, (e0, e1, e2, e3) = self._cuda, self._events
        cu.record(e0)
        try:
            for spec, host, dev in self._in:
                cu.h2d(host, dev, feed[spec.name])
        except KeyError as e:
            raise RunnerError("bad-input", f"engine takes inputs {[s.name for s, _, _ in self._in]}, "
                              f"got {sorted(feed)}") from e
        cu.record(e1)
        if not self._context.execute_async_v3(cu.handle):
            raise RunnerError("bad-input", "TensorRT execute_async_v3 failed (see the agent log)")
        cu.record(e2)
        for _, host, dev in self._out:
            cu.d2h(host, dev)
        cu.record(e3)
        cu.sync()
        # trtexec's split: the benchmark's wall time is the sum; these say where it went
        self.last_timings = {"h2d_ms": cu.elapsed_ms(e0, e1), "compute_ms": cu.elapsed_ms(e1, e2),
                             "d2h_ms": cu.elapsed_ms(e2, e3)}
        return {spec.name: cu.to_numpy(host) for spec, host, _ in self._out}

    def describe(self) -> dict[str, Any]:
        trt = self._trt
        dla = self._settings.get("dla_core")
        return {
            "runtime": self.name,
            "version": str(trt.__version__) if trt else "",
            "delegate": f"dla{dla}" if dla is not None else "gpu",
            "engine": {"key": self._key, "cached": self._cached, "build_s": round(self._build_s, 3),
                       **self._settings},
            "gpu": self._gpu,
            "threads": 0,
            "last_timings": dict(self.last_timings),
            "verified": False,  # see the module docstring
        }

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._in, self._out = [], []


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gpu_name_or_none() -> Optional[str]:
    """The GPU's name when a CUDA backend is importable, for GetInfo; None elsewhere."""
    try:
        return _cuda().gpu_name()
    except RunnerError:
        return None
