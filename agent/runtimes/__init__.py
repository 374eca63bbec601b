"""Runtime registry: which Runner runs which artifact format, found without importing heavy libraries.

Each entry names the module holding its Runner, the formats it runs, the distributions that provide
it (probed with importlib.metadata, so GetInfo never imports torch or tensorflow) and the pip extra
that installs it. A runtime is chosen by the artifact's format, a forced name, and what is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Optional

from agent.runtimes.base import Runner, RunnerError


@dataclass(frozen=True)
class RuntimeEntry:
    name: str
    module: str                 # agent.runtimes.<module>
    cls: str
    formats: tuple[str, ...]
    import_name: str            # top-level module that must be importable
    dists: tuple[str, ...]      # distributions to read the version from
    extra: str                  # pip extra that installs it
    delegates: tuple[str, ...] = ()
    # Python modules the Runner's load() imports. The worker imports them first and reports that
    # time apart (import_ms): importing executorch.runtime costs seconds of Python that a device pays
    # once per process, and would otherwise swamp the model's own load time.
    preload: tuple[str, ...] = ()


# Order is preference: the first installed runtime for a format wins unless one is forced.
RUNTIMES: tuple[RuntimeEntry, ...] = (
    RuntimeEntry("litert", "tflite", "LiteRTRunner", ("tflite",), "ai_edge_litert",
                 ("ai-edge-litert",), "tflite", ("xnnpack",), ("ai_edge_litert.interpreter",)),
    RuntimeEntry("tflite-runtime", "tflite", "TFLiteRuntimeRunner", ("tflite",), "tflite_runtime",
                 ("tflite-runtime",), "tflite-legacy", ("xnnpack",), ("tflite_runtime.interpreter",)),
    RuntimeEntry("tf-lite", "tflite", "TFLiteTFRunner", ("tflite",), "tensorflow",
                 ("tensorflow-cpu", "tensorflow"), "tflite", (), ("tensorflow",)),
    RuntimeEntry("tensorrt", "tensorrt", "TensorRTRunner", ("onnx",), "tensorrt",
                 ("tensorrt", "tensorrt-cu12"), "tensorrt", ("gpu", "dla"), ("tensorrt",)),
    RuntimeEntry("onnxruntime", "onnxruntime", "OnnxRuntimeRunner", ("onnx",), "onnxruntime",
                 ("onnxruntime", "onnxruntime-gpu"), "onnx", ("cpu", "cuda"), ("onnxruntime",)),
    RuntimeEntry("torch-mobile", "torch_mobile", "TorchMobileRunner", ("ptl", "torchscript"), "torch",
                 ("torch",), "torch", (), ("torch",)),
    RuntimeEntry("executorch", "executorch", "ExecuTorchRunner", ("pte",), "executorch",
                 ("executorch",), "executorch", ("xnnpack",), ("torch", "executorch.runtime")),
)

BY_NAME = {r.name: r for r in RUNTIMES}


def _version(entry: RuntimeEntry) -> str:
    for d in entry.dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return ""


def _find_spec(name: str) -> Optional[ModuleSpec]:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, from its files: importing torch takes seconds and
    hundreds of MB, too much for GetInfo. CPU-only wheels ship no libtorch_cuda."""
    spec = _find_spec("torch")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(loc) / "lib"
        if any(lib.glob("libtorch_cuda*")) or any(lib.glob("torch_cuda*")):
            return True
    return False


def _cuda_python_found() -> bool:
    # cuda-python >= 12.6 is cuda.bindings; older releases have cuda.cudart (both what cuda_buffers imports)
    return _find_spec("cuda") is not None and any(_find_spec(m) for m in ("cuda.bindings", "cuda.cudart"))


def unusable_reason(entry: RuntimeEntry) -> str:
    """Why an installed runtime cannot work here, found without importing it ("" when nothing is known)."""
    if entry.name == "tensorrt" and not (_cuda_python_found() or _torch_has_cuda()):
        # the runner's device buffers and timing events come from one of these (agent/runtimes/cuda_buffers.py)
        return ("TensorRT needs CUDA buffers from cuda-python or a CUDA build of torch, and neither is installed: "
                "pip install cuda-python")
    if entry.name == "tflite-runtime":
        # its wheels are built against numpy 1 and fail to import under numpy 2 ("_ARRAY_API not found")
        try:
            numpy_version = metadata.version("numpy")
        except metadata.PackageNotFoundError:
            return ""
        if int(numpy_version.split(".")[0]) >= 2:
            return f"tflite-runtime needs numpy<2 (this device has numpy {numpy_version})"
    return ""


def _found(entry: RuntimeEntry) -> bool:
    return _find_spec(entry.import_name) is not None


def is_installed(entry: RuntimeEntry) -> bool:
    return _found(entry) and not unusable_reason(entry)


def delegates_found(entry: RuntimeEntry) -> list[str]:
    """The delegates/providers this device can really offer, told from installed files (no imports):
    CUDA only with the onnxruntime-gpu build, DLA only on a Jetson (Xavier/Orin carry DLA cores)."""
    if entry.name == "onnxruntime":
        try:
            metadata.version("onnxruntime-gpu")
            return ["cpu", "cuda"]
        except metadata.PackageNotFoundError:
            return ["cpu"]
    if entry.name == "tensorrt":
        return ["gpu", "dla"] if Path("/etc/nv_tegra_release").exists() else ["gpu"]
    return list(entry.delegates)


def describe_all() -> list[dict]:
    """What each runtime found, for GetInfo: name, version, formats, delegates, available, detail."""
    out = []
    for r in RUNTIMES:
        ok = is_installed(r)
        out.append({
            "name": r.name, "version": _version(r) if ok else "", "formats": list(r.formats),
            "delegates": delegates_found(r) if ok else [], "available": ok,
            "detail": "" if ok else ((_found(r) and unusable_reason(r))
                                     or f"not installed: pip install 'edgebench[{r.extra}]'"),
        })
    return out


def choose(fmt: str, forced: Optional[str] = None, prefer: tuple[str, ...] = ()) -> RuntimeEntry:
    """The runtime for an artifact format; a clear RunnerError naming the extra when none is installed."""
    if forced:
        entry = BY_NAME.get(forced)
        if entry is None:
            raise RunnerError("runtime-missing", f"unknown runtime {forced!r} (known: {', '.join(BY_NAME)})")
        if fmt not in entry.formats:
            raise RunnerError("bad-input", f"runtime {forced} cannot run .{fmt} artifacts")
        if not is_installed(entry):
            raise RunnerError("runtime-missing", (_found(entry) and unusable_reason(entry)) or
                              f"runtime {forced} is not installed on this device: pip install 'edgebench[{entry.extra}]'")
        return entry
    candidates = [r for r in RUNTIMES if fmt in r.formats]
    if not candidates:
        raise RunnerError("bad-input", f"no runtime runs artifacts of format {fmt!r}")
    ordered = sorted(candidates, key=lambda r: (r.name not in prefer, RUNTIMES.index(r)))
    for r in ordered:
        # TensorRT is only picked when asked for (forced or preferred by the target): ORT is the default for .onnx
        if r.name == "tensorrt" and "tensorrt" not in prefer:
            continue
        if is_installed(r):
            return r
    extras = " or ".join(sorted({f"'edgebench[{r.extra}]'" for r in candidates}))
    raise RunnerError("runtime-missing", f"no runtime for .{fmt} artifacts on this device: pip install {extras}")


def preload(entry: RuntimeEntry) -> float:
    """Import the runtime's modules; milliseconds spent (a failure is left to the Runner's load,
    which turns it into its own clear error)."""
    import time

    t0 = time.perf_counter()
    for name in entry.preload:
        try:
            importlib.import_module(name)
        except ImportError:
            break
    return (time.perf_counter() - t0) * 1e3


def create(entry: RuntimeEntry) -> Runner:
    try:
        mod = importlib.import_module(f"agent.runtimes.{entry.module}")
    except ImportError as e:
        raise RunnerError("runtime-missing",
                          f"runtime {entry.name} failed to import ({e}): pip install 'edgebench[{entry.extra}]'") from e
    return getattr(mod, entry.cls)()
