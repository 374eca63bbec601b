"""PyTorch sources: `package.module:function` factories, ExportedProgram `.pt2`, TorchScript `.pt`.

Torch files are loaded eagerly so a corrupt file fails in `load_source` with one line, before any
conversion starts; factories are called once and their weights hashed (they have no file).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

from host.artifacts import sha256_file
from host.models import ModelSource, SourceError


def hash_state_dict(module: Any) -> str:
    """A stable hash of a module's weights and buffers."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def import_callable(spec: str, what: str = "factory") -> Any:
    """'package.module:function' -> the function, with the cwd on sys.path (user code lives there)."""
    mod_name, _, fn_name = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SourceError(f"cannot import {mod_name!r} for {what} {spec!r}: {e}") from e
    except Exception as e:  # user code that fails on import: still one line
        raise SourceError(f"importing {mod_name!r} failed: {type(e).__name__}: {e}") from e
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise SourceError(f"module {mod_name!r} has no callable {fn_name!r} ({what} {spec!r})")
    return fn


def factory_source(spec: str, input_shape: Optional[tuple[int, ...]], task: str) -> ModelSource:
    import torch

    fn = import_callable(spec)
    try:
        model = fn()
    except Exception as e:
        raise SourceError(f"factory {spec} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"factory {spec} returned {type(model).__name__}, expected a torch.nn.Module")
    model.eval()
    # A factory may declare its input shape (attribute on the module or the function) so users
    # need not repeat it with --input-shape.
    shape = input_shape or getattr(model, "input_shape", None) or getattr(fn, "input_shape", None)
    task = getattr(model, "task", None) or task
    name = spec.partition(":")[2]
    dtype = str(getattr(model, "input_dtype", None) or getattr(fn, "input_dtype", None) or "float32")
    src = ModelSource("torch", spec, name, hash_state_dict(model),
                      tuple(shape) if shape else None, task, input_dtype=dtype)
    src._obj = model
    return src


def exported_source(spec: str, p: Path, input_shape: Optional[tuple[int, ...]], task: str) -> ModelSource:
    import torch

    try:
        ep = torch.export.load(str(p))
    except Exception as e:
        raise SourceError(f"cannot load ExportedProgram {p}: {type(e).__name__}: {_first_line(e)}") from e
    shape = input_shape or _exported_input_shape(ep)
    src = ModelSource("exported", spec, p.stem, sha256_file(p), shape, task, p)
    src._obj = ep
    return src


def torchscript_source(spec: str, p: Path, input_shape: Optional[tuple[int, ...]], task: str) -> ModelSource:
    import torch

    try:
        sm = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        hint = " (a .pt file must be TorchScript saved with torch.jit.save; use .pt2 for torch.export)"
        raise SourceError(f"cannot load TorchScript {p}: {_first_line(e)}{hint}") from e
    sm.eval()
    src = ModelSource("torchscript", spec, p.stem, sha256_file(p), input_shape, task, p)
    src._obj = sm
    return src


def _exported_input_shape(ep: Any) -> Optional[tuple[int, ...]]:
    """Shape of the single user input of an ExportedProgram, from its example inputs or graph metadata."""
    ex = getattr(ep, "example_inputs", None)
    if ex and ex[0] and hasattr(ex[0][0], "shape"):
        return tuple(int(d) for d in ex[0][0].shape)
    user_inputs = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            if val is not None:
                try:
                    return tuple(int(d) for d in val.shape)
                except TypeError:  # symbolic batch dimension
                    return None
    return None


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__
