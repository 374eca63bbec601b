"""ExecuTorch runner for `.pte` programs through the `executorch.runtime` Runtime API.

Input/output specs come from the program's method metadata (sizes + ScalarType), falling back to the
manifest where the program does not say. The Python bindings take torch tensors, so torch is needed
beside the executorch wheel; threads go to the XNNPACK/extension threadpool the delegate uses.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from agent.runtimes.base import Runner, RunnerError, RunnerOptions, TensorSpec
from agent.runtimes.torch_mobile import specs_from_manifest, to_numpy_outputs

# c10::ScalarType codes as reported by executorch's TensorInfo.dtype()
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool"}


def dtype_name(code: Any) -> str:
    """An ExecuTorch ScalarType (int code or enum) -> numpy dtype name; a clear error for bfloat16 etc."""
    key = int(code) if not isinstance(code, str) else code
    if key in SCALAR_TYPES:
        return SCALAR_TYPES[key]
    raise RunnerError("bad-input", f"ExecuTorch tensor dtype {code!r} has no numpy equivalent")


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self) -> None:
        self._method: Any = None
        self._program: Any = None
        self._in_specs: list[TensorSpec] = []
        self._out_specs: list[TensorSpec] = []
        self._in_names: list[str] = []
        self._out_names: list[str] = []
        self._threads = 0
        self._method_name = "forward"
        self._backends: list[str] = []
        self._path = ""
        self._delegate_names: Optional[list[str]] = None

    def load(self, path: str, options: RunnerOptions) -> None:
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError as e:
            raise RunnerError("runtime-missing", f"executorch is not installed ({e}): "
                              "pip install 'edgebench[executorch]'") from e
        self._path = path
        self._threads = int(options.threads or 0)
        if self._threads > 0:
            from executorch.extension.pybindings import _C
            _C._unsafe_reset_threadpool(self._threads)  # the threadpool XNNPACK-delegated kernels run on
        runtime = Runtime.get()
        try:
            self._program = runtime.load_program(path)
            names = sorted(self._program.method_names)
            self._method_name = options.runtime_options.get("method") or (
                "forward" if "forward" in names else names[0])
            self._method = self._program.load_method(self._method_name)
            meta = self._method.metadata
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("load-failed", f"executorch could not load {path}: {first}") from e
        try:
            self._backends = sorted(runtime.backend_registry.registered_backend_names)
        except AttributeError:
            self._backends = []
        manifest = options.manifest or {}
        self._in_specs = self._specs(meta.num_inputs(), meta.input_tensor_meta, manifest.get("inputs"), "input")
        self._out_specs = self._specs(meta.num_outputs(), meta.output_tensor_meta, manifest.get("outputs"), "output")
        self._in_names = [s.name for s in self._in_specs]
        self._out_names = [s.name for s in self._out_specs]
        self._from_numpy = torch.from_numpy
        self._execute = self._method.execute

    @staticmethod
    def _specs(count: int, info_at: Any, manifest_items: Any, prefix: str) -> list[TensorSpec]:
        from_manifest = specs_from_manifest(manifest_items) if manifest_items else []
        specs = []
        for i in range(count):
            m = from_manifest[i] if i < len(from_manifest) else None
            try:
                info = info_at(i)
                spec = TensorSpec(name=m.name if m else f"{prefix}_{i}", dtype=dtype_name(info.dtype()),
                                  shape=[int(d) for d in info.sizes()])
            except RuntimeError:  # a non-tensor value (int/bool arg): only the manifest can describe it
                if m is None:
                    raise RunnerError("bad-input", f"{prefix} #{i} of the program is not a tensor and the "
                                      "manifest does not describe it") from None
                spec = m
            if m is not None:  # the program knows no quantization params; the host's manifest does
                spec.scale, spec.zero_point = m.scale, m.zero_point
            specs.append(spec)
        return specs

    def input_specs(self) -> list[TensorSpec]:
        return list(self._in_specs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._out_specs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            arrays = [feed[n] for n in self._in_names]
        except KeyError:
            if len(feed) != len(self._in_names):
                raise RunnerError("bad-input", f"program takes inputs {self._in_names}, got {sorted(feed)}") from None
            arrays = list(feed.values())
        from_numpy = self._from_numpy
        try:
            result = self._execute([from_numpy(a) for a in arrays])
        except (RuntimeError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunnerError("bad-input", f"executorch inference failed: {first}") from e
        return to_numpy_outputs(result, self._out_names)

    def describe(self) -> dict[str, Any]:
        from importlib import metadata
        try:
            version = metadata.version("executorch")
        except metadata.PackageNotFoundError:
            version = ""
        threads = self._threads
        if not threads:
            try:
                from executorch.extension.pybindings import _C
                threads = int(_C._threadpool_get_thread_count())
            except (ImportError, AttributeError):
                threads = 0
        return {
            "runtime": self.name,
            "version": version,
            "delegate": ",".join(self._delegates()) or "none",
            "registered_backends": self._backends,
            "method": self._method_name,
            "threads": threads,
        }

    def _delegates(self) -> list[str]:
        # Delegation is decided at export time and recorded in the program as the backend's id string
        # (e.g. "XnnpackBackend"); the runtime API does not expose it, so look for registered ids in the file.
        if self._delegate_names is None:
            try:
                with open(self._path, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            self._delegate_names = [b.replace("Backend", "").lower() for b in self._backends
                                    if b.encode() in data]
        return self._delegate_names

    def profile(self, feed: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
        """ExecuTorch's ETDump: the program loaded a second time with event tracing on (the measured one runs
        without it), one warm-up run dropped, the dump read here with the devtools' flatcc reader."""
        import tempfile
        import time
        from pathlib import Path

        from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc
        from executorch.runtime import Runtime

        from agent.runtimes.profiling import ProfileUnavailable, parse_etdump_runs

        program = Runtime.get().load_program(self._path, enable_etdump=True)
        method = program.load_method(self._method_name)
        arrays = [feed[n] if n in feed else a for n, a in zip(self._in_names, feed.values())]
        wall = []
        for _ in range(runs + 1):   # timed like infer() (input and output conversion included): the same path
            t0 = time.perf_counter()
            to_numpy_outputs(method.execute([self._from_numpy(a) for a in arrays]), self._out_names)
            wall.append((time.perf_counter() - t0) * 1e3)
        with tempfile.TemporaryDirectory(prefix="etdump-") as tmp:
            dump = Path(tmp) / "run.etdp"
            program.write_etdump_result_to_file(str(dump), str(Path(tmp) / "debug.bin"))
            if not dump.exists():
                raise ProfileUnavailable(self.name, "this executorch build wrote no ETDump (built without event tracer)")
            etdump = deserialize_from_etdump_flatcc(dump.read_bytes())
        blocks = [b for b in etdump.run_data if b.name == "Execute"][1:]  # the first execute is the warm-up
        out = parse_etdump_runs(blocks)
        return out | {"wall_ms": wall[1:], "profiler": f"executorch {self.describe()['version']} ETDump (portable kernels + delegate events)"}

    def close(self) -> None:
        self._method = None
        self._program = None
