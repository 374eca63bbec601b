"""Artifact + Manifest: one converted model file and the JSON record written beside it.

The manifest is the single description of an artifact that travels everywhere: the host writes it
next to the file (`<file>.manifest.json`), the deploy step sends it to the agent with the bytes, and
the result store keeps it with every measurement. Runtimes read `format`, `precision` and the
input/output quantization parameters from it; reports read the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from host.errors import UserError

MANIFEST_SUFFIX = ".manifest.json"
SCHEMA = "edgebench.manifest/1"

# File extension -> artifact format, for artifacts that arrive without a manifest.
FORMAT_BY_SUFFIX = {
    ".tflite": "tflite",
    ".ptl": "ptl",
    ".pt": "torchscript",
    ".pte": "pte",
    ".onnx": "onnx",
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0          # quantization scale, 0 when the tensor is not quantized
    zero_point: int = 0


@dataclass
class Manifest:
    file: str                   # file name, relative to the manifest
    sha256: str
    size_bytes: int
    platform: str               # pytorch | executorch | tflite | tensorrt
    format: str                 # ptl | pte | tflite | onnx | torchscript
    precision: str              # fp32 | fp16 | int8 | dynamic-int8 | mixed
    method: str                 # fp32 | dynamic | fp16 | static | qat
    task: str = "classification"
    model_name: str = ""
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)   # method, samples, dataset, per_channel
    preprocessing: dict[str, Any] = field(default_factory=dict)  # resize, mean, std, layout, dtype
    source: dict[str, Any] = field(default_factory=dict)         # path, kind, sha256
    engine: dict[str, Any] = field(default_factory=dict)         # backend/engine choices (qnnpack/x86, trt flags)
    checks: dict[str, Any] = field(default_factory=dict)         # host-side agreement, op counts, warnings
    tool_versions: dict[str, str] = field(default_factory=dict)
    conversion_s: float = 0.0
    created: str = ""
    schema: str = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d["inputs"] = [TensorInfo(**t) for t in d.get("inputs", [])]
        d["outputs"] = [TensorInfo(**t) for t in d.get("outputs", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)

    def write_manifest(self) -> Path:
        p = self.manifest_path
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(self.manifest.to_json())
        tmp.replace(p)
        return p


def manifest_path_for(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


class ArtifactError(UserError):
    """A user-facing problem with an artifact file (missing, unknown format, bad manifest)."""


def load_artifact(path: str | Path) -> Artifact:
    """Open an artifact file and its manifest; a bare file gets a minimal manifest from its suffix."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"artifact not found: {p}")
    mp = manifest_path_for(p)
    digest = sha256_file(p)
    if mp.is_file():
        try:
            m = Manifest.from_dict(json.loads(mp.read_text()))
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"bad manifest {mp}: {e}") from e
        if m.sha256 != digest:
            raise ArtifactError(f"{p} does not match its manifest (sha256 differs); re-run host quantize")
        return Artifact(p, m)
    fmt = FORMAT_BY_SUFFIX.get(p.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMAT_BY_SUFFIX))
        raise ArtifactError(f"unknown artifact type {p.name!r} (expected one of {known})")
    if fmt in ("tflite", "onnx"):   # a ready model file: its manifest is read from the file (source "as given")
        from host.artifact_inspect import InspectError, manifest_from_file

        try:
            return Artifact(p, manifest_from_file(p, fmt, digest))
        except InspectError as e:
            raise ArtifactError(str(e)) from e
    m = Manifest(file=p.name, sha256=digest, size_bytes=p.stat().st_size, platform=_platform_of(fmt),
                 format=fmt, precision="unknown", method="unknown", model_name=p.stem)
    return Artifact(p, m)


# Files a folder given as --artifact may hold without manifests: formats whose file describes itself.
SELF_DESCRIBING = (".tflite", ".onnx")


def _platform_of(fmt: str) -> str:
    return {"tflite": "tflite", "ptl": "pytorch", "torchscript": "pytorch", "pte": "executorch",
            "onnx": "onnx"}.get(fmt, fmt)


def optional_path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None
