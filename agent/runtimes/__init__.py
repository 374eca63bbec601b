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


# Order is preference: the first installed runtime for a format wins unless one is forced.
RUNTIMES: tuple[RuntimeEntry, ...] = (
    RuntimeEntry("litert", "tflite", "LiteRTRunner", ("tflite",), "ai_edge_litert",
                 ("ai-edge-litert",), "tflite", ("xnnpack",)),
    RuntimeEntry("tflite-runtime", "tflite", "TFLiteRuntimeRunner", ("tflite",), "tflite_runtime",
                 ("tflite-runtime",), "tflite-legacy", ("xnnpack",)),
    RuntimeEntry("tf-lite", "tflite", "TFLiteTFRunner", ("tflite",), "tensorflow",
                 ("tensorflow-cpu", "tensorflow"), "tflite"),
    RuntimeEntry("tensorrt", "tensorrt", "TensorRTRunner", ("onnx",), "tensorrt",
                 ("tensorrt", "tensorrt-cu12"), "tensorrt", ("gpu", "dla")),
    RuntimeEntry("onnxruntime", "onnxruntime", "OnnxRuntimeRunner", ("onnx",), "onnxruntime",
                 ("onnxruntime", "onnxruntime-gpu"), "onnx", ("cpu", "cuda")),
    RuntimeEntry("torch-mobile", "torch_mobile", "TorchMobileRunner", ("ptl", "torchscript"), "torch",
                 ("torch",), "torch"),
    RuntimeEntry("executorch", "executorch", "ExecuTorchRunner", ("pte",), "executorch",
                 ("executorch",), "executorch", ("xnnpack",)),
)

BY_NAME = {r.name: r for r in RUNTIMES}


def _version(entry: RuntimeEntry) -> str:
    for d in entry.dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return ""


def unusable_reason(entry: RuntimeEntry) -> str:
    """Why an installed runtime cannot work here, found without importing it ("" when nothing is known)."""
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
    try:
        return importlib.util.find_spec(entry.import_name) is not None
    except (ImportError, ValueError):
        return False


def is_installed(entry: RuntimeEntry) -> bool:
    return _found(entry) and not unusable_reason(entry)


def describe_all() -> list[dict]:
    """What each runtime found, for GetInfo: name, version, formats, delegates, available, detail."""
    out = []
    for r in RUNTIMES:
        ok = is_installed(r)
        out.append({
            "name": r.name, "version": _version(r) if ok else "", "formats": list(r.formats),
            "delegates": list(r.delegates) if ok else [], "available": ok,
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
            raise RunnerError("runtime-missing",
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


def create(entry: RuntimeEntry) -> Runner:
    try:
        mod = importlib.import_module(f"agent.runtimes.{entry.module}")
    except ImportError as e:
        raise RunnerError("runtime-missing",
                          f"runtime {entry.name} failed to import ({e}): pip install 'edgebench[{entry.extra}]'") from e
    return getattr(mod, entry.cls)()
