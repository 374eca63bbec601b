"""TensorRT runner: builds an engine on the device from an `.onnx` artifact and runs it, timing H2D / compute / D2H.

UNVERIFIED: written against the TensorRT 10 Python API (named I/O tensors, execute_async_v3, explicit Q/DQ
INT8), but TensorRT cannot be installed anywhere this project is developed. Tested: the pure parts below
(flag mapping, cache keys, the missing-runtime error) and the control flow (build once, cache, rebuild on
new flags with the timing cache, binding, the H2D / compute / D2H split) against a simulated API
(tests/trt_simulator.py). Run it on a real Jetson before trusting it.

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
from agent.runtimes.cuda_buffers import cuda_backend

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
        self._timings: list[dict[str, float]] = []

    def load(self, path: str, options: RunnerOptions) -> None:
        trt = self._trt = import_tensorrt()
        manifest = options.manifest or {}
        self._settings = build_flags(manifest)
        self._cuda = cuda_backend()
        self._gpu = self._cuda.gpu_name()
        sha = manifest.get("sha256") or _sha256(path)
        self._key = cache_key(sha, trt.__version__, self._gpu, self._settings)
        cache_dir = options.cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), ".cache")
        epath = engine_path(cache_dir, self._key)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if self._settings["dla_core"] is not None:
            runtime.DLA_core = self._settings["dla_core"]
        self._engine = None
        if os.path.isfile(epath):
            with open(epath, "rb") as f:
                self._engine = runtime.deserialize_cuda_engine(f.read())
            self._cached = self._engine is not None
            if self._engine is None:  # truncated or foreign file: rebuild rather than fail every deploy
                os.unlink(epath)
        if self._engine is None:
            t0 = time.perf_counter()
            blob = self._build(trt, logger, path, timing_cache_path(cache_dir, trt.__version__, self._gpu))
            self._build_s = time.perf_counter() - t0
            _atomic_write(epath, blob)
            self._engine = runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise RunnerError("load-failed", f"TensorRT built but could not deserialize the engine {epath}")
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
        # parse_from_file also resolves external weight files beside the .onnx (models over 2 GB)
        if not parser.parse_from_file(onnx_path):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RunnerError("load-failed", f"TensorRT's ONNX parser rejected {onnx_path}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s["workspace_mb"] << 20)
        for name in s["flags"]:
            flag = getattr(trt.BuilderFlag, name.lstrip("-"), None)
            if flag is None:  # newer TensorRT drops weak-typing flags in favour of strongly typed networks
                raise RunnerError("load-failed", f"TensorRT {trt.__version__} has no builder flag {name.lstrip('-')}: "
                                  "export the ONNX in its target precision and set engine.strongly_typed")
            (config.clear_flag if name.startswith("-") else config.set_flag)(flag)
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
        if len(self._timings) < 100_000:
            self._timings.append(self.last_timings)
        return {spec.name: cu.to_numpy(host) for spec, host, _ in self._out}

    def profile(self, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        """UNVERIFIED (as the rest of this module): TensorRT 10's IProfiler on the loaded context, one report per
        synchronised infer(), plus the engine inspector's layer information (types and precisions only when the
        engine was built with detailed profiling verbosity; names otherwise). The profiler is detached afterwards."""
        import json
        import time

        from agent.runtimes.profiling import parse_trt_layers

        trt = self._trt
        current: list[tuple[str, float]] = []

        class _Layers(trt.IProfiler):
            def report_layer_time(self, layer_name: str, ms: float) -> None:
                current.append((str(layer_name), float(ms)))

        reports, wall = [], []
        self._context.profiler = _Layers()
        try:
            for i in range(runs + 1):
                current.clear()
                t0 = time.perf_counter()
                self.infer(feed)   # synchronises the stream, so this run's layer reports have all arrived
                wall.append((time.perf_counter() - t0) * 1e3)
                if i:              # the first is the warm-up
                    reports.append(list(current))
        finally:
            self._context.profiler = None
        try:
            inspector = self._engine.create_engine_inspector()
            inspector.execution_context = self._context
            info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        except (AttributeError, RuntimeError, ValueError):
            info = {}
        out = parse_trt_layers(reports, info)
        return out | {"wall_ms": wall[1:], "profiler": f"tensorrt {trt.__version__} IProfiler (unverified)"}

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
            "timings_median_ms": split_medians(self._timings),
            "verified": False,  # see the module docstring
        }

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._in, self._out = [], []


def split_medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """Median H2D / compute / D2H over the inferences so far (describe() after a benchmark reports them)."""
    if not samples:
        return {}
    return {k: float(np.median([s[k] for s in samples])) for k in ("h2d_ms", "compute_ms", "d2h_ms")}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gpu_name_or_none() -> Optional[str]:
    """The GPU's name when a CUDA backend is importable, for GetInfo; None elsewhere."""
    try:
        return cuda_backend().gpu_name()
    except RunnerError:
        return None
