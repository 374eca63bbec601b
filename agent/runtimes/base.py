"""The Runner contract every runtime implements the same way (after Polygraphy's BaseRunner).

    runner = RunnerClass()
    runner.load(path, options)        # options: RunnerOptions (threads, runtime_options, manifest)
    runner.input_specs() / output_specs() -> list[TensorSpec]
    runner.infer({name: array}) -> {name: array}
    runner.describe() -> dict         # runtime, version, delegate/engine, threads, ...
    runner.close()

Inputs and outputs are the artifact's own tensors: an int8-I/O model takes int8 arrays. Callers that
hold float data quantize it with `quantize_input` using the spec's scale/zero-point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


class RunnerError(Exception):
    """A runtime problem reported to the user as one line (code + message)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int]
    scale: float = 0.0
    zero_point: int = 0


@dataclass
class RunnerOptions:
    threads: int = 0                                       # 0 = runtime default
    runtime_options: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)  # the host's manifest (precision, quant params)
    cache_dir: Optional[str] = None                         # for engines / timing caches


class Runner(ABC):
    name: str = ""

    @abstractmethod
    def load(self, path: str, options: RunnerOptions) -> None: ...

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None:  # noqa: B027 - optional for runtimes with nothing to free
        pass


def quantize_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float data -> the integer dtype a quantized input expects, with its scale/zero-point."""
    dt = np.dtype(spec.dtype)
    if dt.kind == "f" or spec.scale == 0:
        return x.astype(dt, copy=False)
    info = np.iinfo(dt)
    q = np.round(x / spec.scale + spec.zero_point)
    return np.clip(q, info.min, info.max).astype(dt)


def dequantize_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if np.dtype(spec.dtype).kind == "f" or spec.scale == 0:
        return y.astype(np.float32, copy=False)
    return (y.astype(np.float32) - spec.zero_point) * spec.scale


def concrete_shapes(specs: list[TensorSpec], known: Optional[dict[str, list[int]]] = None) -> dict[str, list[int]]:
    """The shape each input is fed at: the runner's static dims, its dynamic ones from `known` (the
    manifest's recorded shapes, by name, or by position for a single input). A dynamic batch (first) dim
    with no known size is 1, the protocol's batch; any other dynamic dim with no known size is an error:
    timing a model at a made-up size (1x1 pixels) would report a number for an input nobody runs."""
    known = known or {}
    out = {}
    for s in specs:
        given = known.get(s.name) or (next(iter(known.values())) if len(known) == 1 == len(specs) else None)
        if given is not None and len(given) != len(s.shape):
            given = None     # a recorded shape of another rank says nothing about this input
        dims = []
        for k, d in enumerate(s.shape):
            if d and d > 0:
                dims.append(int(d))
            elif given is not None and given[k] > 0:
                dims.append(int(given[k]))
            elif k == 0:
                dims.append(1)
            else:
                raise RunnerError("bad-input", f"input {s.name!r} has dynamic dimensions {list(s.shape)} and no known "
                                  "size: quantize it with --input-shape (recorded in the manifest) or pass --inputs")
        out[s.name] = dims
    return out


def manifest_shapes(manifest: dict[str, Any]) -> dict[str, list[int]]:
    """{input name: shape} the host recorded in a manifest (only fully known shapes)."""
    out = {}
    for t in manifest.get("inputs") or []:
        shape = t.get("shape") if isinstance(t, dict) else None
        if shape and all(isinstance(d, int) and d > 0 for d in shape):
            out[str(t.get("name"))] = [int(d) for d in shape]
    return out


def random_inputs(specs: list[TensorSpec], count: int, seed: int,
                  known: Optional[dict[str, list[int]]] = None) -> list[dict[str, np.ndarray]]:
    """Deterministic random feeds per dtype, at `concrete_shapes(specs, known)`."""
    rng = np.random.default_rng(seed)
    shapes = concrete_shapes(specs, known)
    feeds = []
    for _ in range(max(1, count)):
        feed = {}
        for s in specs:
            shape = shapes[s.name]
            dt = np.dtype(s.dtype)
            if dt.kind == "f":
                feed[s.name] = rng.standard_normal(shape).astype(dt)
            elif dt.kind in "iu":
                info = np.iinfo(dt)
                if dt.itemsize == 1:
                    lo, hi = int(info.min), int(info.max)  # int8 -128..127, uint8 0..255 (images): the full range
                elif dt.kind == "i" and dt.itemsize >= 4:
                    lo, hi = 0, 16  # int32/int64 are indices/ids: keep them small and valid
                else:
                    lo, hi = max(int(info.min), -128), min(int(info.max), 127)  # int16, uint16, ...: as before
                feed[s.name] = rng.integers(lo, hi + 1, size=shape, dtype=dt)
            elif dt == np.bool_:
                feed[s.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            else:
                raise RunnerError("bad-input", f"cannot make random input of dtype {s.dtype}")
        feeds.append(feed)
    return feeds
