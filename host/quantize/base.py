"""The Converter contract: quantize(source, platform, method, calibration) -> Artifact.

One module per platform implements `Converter`; `host.quantize.registry` maps platform names to
them (imported lazily, so a missing heavy library only matters for the platform that needs it).
Calibration data and methods are shared (host.quantize.calibration), never re-written per platform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from host.artifacts import Artifact
from host.errors import UserError

METHODS = ("fp32", "dynamic", "fp16", "static", "qat")
CALIB_METHODS = ("minmax", "percentile", "entropy")


class QuantizeError(UserError):
    """A user-facing conversion problem: impossible source/platform pair, bad data, failed export.
    The message is one line that says what to do."""


@dataclass
class QuantizeRequest:
    source: Any                          # host.models.ModelSource
    method: str                          # one of METHODS
    out_dir: Path
    calib: Any = None                    # host.data.datasets.Dataset or None
    calib_method: str = "minmax"
    calib_samples: int = 256
    per_channel: bool = True
    input_shape: Optional[tuple[int, ...]] = None
    float_io: bool = False               # TFLite static: keep float I/O instead of int8
    target_arch: str = "x86_64"          # picks the PyTorch engine: qnnpack on arm, x86 otherwise
    reduce_range: Optional[bool] = None  # pytorch x86 engine: 7-bit activations; None = by the host's int8 ISA
    train: Any = None                    # QAT: labelled dataset for the built-in loop
    train_fn: Optional[str] = None       # QAT: "package.module:train" user function
    epochs: int = 1
    check: Any = None                    # held-out dataset for the host-side check
    progress: Any = None                 # callable(str) for progress lines
    extra: dict[str, Any] = field(default_factory=dict)


class Converter(ABC):
    platform: str = ""
    format: str = ""
    methods: tuple[str, ...] = ()

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        """None when (source, method) can be converted, else one line saying why not."""
        if method not in self.methods:
            return f"{self.platform} has no method {method!r} (has: {', '.join(self.methods)})"
        return None

    @abstractmethod
    def quantize(self, req: QuantizeRequest) -> Artifact:
        """Convert, write artifact + manifest into req.out_dir, run the host-side check."""


def quantize_cleanly(conv: Converter, req: QuantizeRequest) -> Artifact:
    """conv.quantize(req), leaving nothing behind when it fails: a half-written artifact, or one whose host
    check failed, is removed, with any manifest beside it (which would describe other bytes)."""
    import contextlib

    from host.artifacts import MANIFEST_SUFFIX
    from host.quiet import library_stream

    out = Path(req.out_dir)
    prefix = f"{req.source.name}-{conv.platform}-{req.method}."

    def ours() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(prefix)} if out.is_dir() else {}

    before = ours()
    try:
        # Libraries print progress on stdout (onnxruntime's calibrators do), which carries --json output: it goes
        # where third-party output goes (the log inside host.quiet.quiet(), else stderr), for every caller.
        with contextlib.redirect_stdout(library_stream()):
            return conv.quantize(req)
    except BaseException:
        for p, mtime in ours().items():
            if before.get(p) != mtime and not p.name.endswith(MANIFEST_SUFFIX):
                p.unlink(missing_ok=True)
                Path(f"{p}{MANIFEST_SUFFIX}").unlink(missing_ok=True)
        raise
