"""CUDA buffers, a stream and timing events for the TensorRT runner, from torch (with CUDA) or cuda-python.

Both backends expose the same small surface: alloc(shape, dtype) -> (host, device, device_ptr), h2d, d2h,
event/record/elapsed_ms, sync, to_numpy, gpu_name, and `handle` (the stream for execute_async_v3).
UNVERIFIED like the runner itself: no GPU with TensorRT has been available to this project.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.runtimes.base import RunnerError


class TorchCuda:
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


class CudaPython:
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


def cuda_backend() -> Any:
    errors = []
    for backend in (TorchCuda, CudaPython):
        try:
            return backend()
        except ImportError as e:
            errors.append(str(e))
    raise RunnerError("runtime-missing", "TensorRT needs CUDA buffers from torch (with CUDA) or cuda-python: "
                      f"pip install cuda-python ({'; '.join(errors)})")
