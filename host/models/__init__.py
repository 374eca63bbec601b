"""Model sources: load what the user points `--model` at and describe it (kind, name, hash, input shape).

`load_source(spec, input_shape)` returns a `ModelSource` whose heavy object (nn.Module,
ExportedProgram, ScriptModule, ONNX graph, Keras model) is only loaded when a converter asks for it.

Spec forms:
  package.module:function   PyTorch factory returning an nn.Module (cwd and user code on sys.path)
  FILE.pt2                  torch.export ExportedProgram (torch.export.save)
  FILE.pt                   TorchScript (torch.jit.save)
  FILE.onnx                 ONNX graph
  FILE.keras / FILE.h5      Keras model (loaded by host.models.keras_source)
  DIR (saved_model.pb)      TensorFlow SavedModel (loaded by host.models.keras_source)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from host.artifacts import sha256_file
from host.errors import UserError

TORCH_KINDS = ("torch", "exported", "torchscript")
TF_KINDS = ("keras", "savedmodel")
FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


KIND_PHRASES = {"torch": "a PyTorch module", "exported": "an ExportedProgram (.pt2)", "torchscript": "a TorchScript model",
                "onnx": "an ONNX model", "keras": "a Keras model", "savedmodel": "a TensorFlow SavedModel"}


def kind_phrase(kind: str) -> str:
    """A source kind as a message says it, article included ("an ONNX model", never "a onnx model")."""
    return KIND_PHRASES.get(kind, f"a model of kind {kind!r}")


class SourceError(UserError):
    """A model source that cannot be used (missing file, bad factory, corrupt model): one line."""


@dataclass
class ModelSource:
    kind: str                                   # torch | exported | torchscript | onnx | keras | savedmodel
    spec: str
    name: str
    sha256: str
    input_shape: Optional[tuple[int, ...]] = None
    task: str = "classification"
    path: Optional[Path] = None
    _loader: Optional[Callable[[], Any]] = field(default=None, repr=False)
    _obj: Any = field(default=None, repr=False)
    input_dtype: str = "float32"                # e.g. int64 token ids (a factory's `input_dtype` attribute)

    # -- lazy accessors -------------------------------------------------------------------------
    def load(self) -> Any:
        """The loaded object: nn.Module, ExportedProgram, ScriptModule, onnx.ModelProto or Keras model."""
        if self._obj is None and self._loader is not None:
            self._obj = self._loader()
        return self._obj

    @property
    def is_torch(self) -> bool:
        return self.kind in TORCH_KINDS

    def torch_module(self) -> Any:
        """An eval-mode torch.nn.Module (ExportedProgram -> .module(); TorchScript stays scripted; an ONNX graph
        through onnx2torch, checked against ONNX Runtime: host.models.onnx_torch)."""
        if self.kind == "onnx":
            from host.models.onnx_torch import convert

            return convert(self)
        obj = self.load()
        if self.kind == "exported":
            return obj.module()
        return obj.eval() if hasattr(obj, "eval") else obj

    def fresh_torch_module(self) -> Any:
        """A private eval-mode copy for converters that mutate the model in place (QAT, quantization).
        (An ExportedProgram's module refuses .train()/.eval(); it is already in inference form.)"""
        import copy

        return copy.deepcopy(self.torch_module())

    def require_shape(self) -> tuple[int, ...]:
        if not self.input_shape:
            raise SourceError(f"cannot tell the input shape of {self.spec}: pass --input-shape, e.g. 1,3,32,32")
        return tuple(self.input_shape)

    def example_input(self, batch: Optional[int] = None) -> Any:
        import torch

        shape = list(self.require_shape())
        if batch is not None:
            shape[0] = batch
        g = torch.Generator().manual_seed(0)
        if self.input_dtype.startswith(("int", "uint")):   # token ids: small valid ids, no padding
            from host.quantize.calibration import RANDOM_ID_RANGE

            return torch.randint(*RANDOM_ID_RANGE, shape, generator=g, dtype=getattr(torch, self.input_dtype))
        return torch.randn(*shape, generator=g)

    def describe(self) -> dict[str, Any]:
        """For manifest.source."""
        return {"spec": self.spec, "kind": self.kind, "name": self.name, "sha256": self.sha256,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "input_dtype": self.input_dtype}


def load_source(spec: str, input_shape: Optional[tuple[int, ...]] = None, task: str = "classification") -> ModelSource:
    """Detect what `spec` is and return a ModelSource; factories are imported and built here so a bad
    path fails early with one line, files are only checked for existence and hashed."""
    p = Path(spec)
    if p.is_dir():
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            return _tf_source("savedmodel", spec, p, input_shape, task)
        raise SourceError(f"{spec} is a directory without saved_model.pb (expected a TensorFlow SavedModel)")
    suffix = p.suffix.lower()
    if suffix in (".pt2", ".pt", ".pth", ".onnx", ".keras", ".h5"):
        if not p.is_file():
            raise SourceError(f"model file not found: {spec}")
        if suffix in (".keras", ".h5"):
            return _tf_source("keras", spec, p, input_shape, task)
        if suffix == ".onnx":
            from host.models.onnx_source import onnx_source

            return onnx_source(spec, p, input_shape, task)
        from host.models import torch_source

        if suffix == ".pt2":
            return torch_source.exported_source(spec, p, input_shape, task)
        return torch_source.torchscript_source(spec, p, input_shape, task)
    if FACTORY_RE.match(spec):
        from host.models import torch_source

        return torch_source.factory_source(spec, input_shape, task)
    if p.exists():
        raise SourceError(f"unsupported model file {spec}: use .pt2, .pt, .onnx, .keras, .h5, a SavedModel "
                          "directory or a package.module:function factory")
    raise SourceError(f"model not found: {spec!r} is neither a file nor a package.module:function factory")


def _tf_source(kind: str, spec: str, p: Path, input_shape: Optional[tuple[int, ...]], task: str) -> ModelSource:
    digest = sha256_file(p) if p.is_file() else _hash_dir(p)

    def loader() -> Any:
        try:
            from host.models.keras_source import load_keras
        except ImportError as e:
            raise SourceError(f"cannot load {kind} models here ({e}); install the 'host' extra (tensorflow-cpu)") from e
        return load_keras(str(p))

    return ModelSource(kind, spec, p.stem if p.is_file() else p.name, digest, input_shape, task, p, loader)


def _hash_dir(p: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
