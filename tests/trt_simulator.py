"""A SIMULATED TensorRT 10 Python API, for testing the TensorRT runner's own control flow only.

TensorRT cannot be installed anywhere this project is built (../shared/FACTS.md), so the runner's
logic around the API - engine cache hit/miss, builder flags, timing-cache reuse, I/O binding, the
H2D / compute / D2H split - would otherwise never run. This module provides the few classes that
logic calls, with the signatures of the TensorRT 10 API; its "engine" runs the ONNX on ONNX Runtime
(CPU) so outputs are real. It proves nothing about TensorRT itself: that needs a real Jetson.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np

__version__ = "10.3.0-simulated"
BUILDS: list[dict[str, Any]] = []        # every build_serialized_network call, for assertions


class Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


class BuilderFlag(enum.Enum):
    FP16 = 0
    INT8 = 1
    TF32 = 2
    GPU_FALLBACK = 3


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class DeviceType(enum.Enum):
    GPU = 0
    DLA = 1


class TensorIOMode(enum.Enum):
    INPUT = 0
    OUTPUT = 1


def nptype(dtype: Any) -> type:
    return np.dtype(dtype).type


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.onnx, self.inputs = flags, "", []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> Any:
        return self.inputs[i]


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network, self.errors = network, []

    def parse_from_file(self, path: str) -> bool:
        import onnx

        try:
            m = onnx.load(path)
        except Exception as e:  # noqa: BLE001 - what TensorRT's parser reports as a parse error
            self.errors.append(str(e))
            return False
        init = {t.name for t in m.graph.initializer}
        self.network.onnx = path
        self.network.inputs = [types.SimpleNamespace(
            name=i.name, shape=[d.dim_value or -1 for d in i.type.tensor_type.shape.dim])
            for i in m.graph.input if i.name not in init]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class _TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.entries = json.loads(blob or b"[]")

    def serialize(self) -> bytes:
        return json.dumps(self.entries).encode()


class _Config:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.cleared: set[str] = set()
        self.pools: dict[Any, int] = {}
        self.profiles: list[Any] = []
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self.builder_optimization_level = 3
        self.cache: _TimingCache | None = None

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, f: BuilderFlag) -> None:
        self.flags.add(f.name)

    def clear_flag(self, f: BuilderFlag) -> None:
        self.cleared.add(f.name)

    def add_optimization_profile(self, p: Any) -> int:
        self.profiles.append(p)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> _TimingCache:
        return _TimingCache(blob)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        assert self.cache is not None
        return self.cache


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> _Network:
        return _Network(flags)

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> Any:
        p = types.SimpleNamespace(shapes={})
        p.set_shape = lambda name, lo, opt, hi: p.shapes.__setitem__(name, (lo, opt, hi))
        return p

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        reused = len(config.get_timing_cache().entries)
        config.get_timing_cache().entries.append(network.onnx)   # "tactics" measured by this build
        BUILDS.append({"flags": sorted(config.flags), "cleared": sorted(config.cleared),
                       "strongly_typed": bool(network.flags), "timing_entries_reused": reused,
                       "device": config.default_device_type.name})
        return json.dumps({"onnx": network.onnx, "flags": sorted(config.flags)}).encode()


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self.addresses = engine, {}

    def set_input_shape(self, name: str, shape: list[int]) -> bool:
        return True

    def get_tensor_shape(self, name: str) -> list[int]:
        return self.engine.get_tensor_shape(name)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: Any) -> bool:
        mem = SimCuda.memory
        feed = {n: mem[self.addresses[n]] for n in self.engine.inputs}
        outs = self.engine.session.run(self.engine.outputs, feed)
        for n, y in zip(self.engine.outputs, outs):
            mem[self.addresses[n]][...] = y
        return True


class _Engine:
    def __init__(self, blob: bytes) -> None:
        import onnxruntime as ort

        d = json.loads(blob)
        self.session = ort.InferenceSession(d["onnx"], providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._shapes = {t.name: [x if isinstance(x, int) else 1 for x in t.shape]
                        for t in list(self.session.get_inputs()) + list(self.session.get_outputs())}

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i: int) -> str:
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> list[int]:
        return list(self._shapes[name])

    def get_tensor_dtype(self, name: str) -> Any:
        return np.float32

    def create_execution_context(self) -> _Context:
        return _Context(self)


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.DLA_core = -1

    def deserialize_cuda_engine(self, blob: bytes) -> _Engine | None:
        try:
            return _Engine(blob)
        except (ValueError, KeyError):   # a truncated or foreign file: TensorRT returns None
            return None


class SimCuda:
    """The runner's CUDA-backend surface on host memory; events count as 1 ms apart."""
    memory: dict[int, np.ndarray] = {}

    def __init__(self) -> None:
        self.handle, self.clock = 0, 0.0

    def gpu_name(self) -> str:
        return "Simulated Orin (no GPU)"

    def alloc(self, shape: list[int], dtype: np.dtype) -> tuple[Any, Any, int]:
        host, dev = np.zeros(shape, dtype), np.zeros(shape, dtype)
        SimCuda.memory[id(dev)] = dev
        return host, dev, id(dev)

    def event(self) -> list[float]:
        return [0.0]

    def record(self, ev: list[float]) -> None:
        self.clock += 1.0
        ev[0] = self.clock

    def h2d(self, host: np.ndarray, dev: np.ndarray, arr: np.ndarray) -> None:
        host[...] = arr
        dev[...] = host

    def d2h(self, host: np.ndarray, dev: np.ndarray) -> None:
        host[...] = dev

    def sync(self) -> None:
        pass

    @staticmethod
    def elapsed_ms(a: list[float], b: list[float]) -> float:
        return b[0] - a[0]

    @staticmethod
    def to_numpy(host: np.ndarray) -> np.ndarray:
        return host.copy()
