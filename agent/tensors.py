"""numpy <-> wire tensors: raw little-endian bytes + dtype name + shape, never repeated floats."""

from __future__ import annotations

import numpy as np

from protos import edge_agent_pb2 as pb


def to_proto(name: str, a: np.ndarray) -> pb.Tensor:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return pb.Tensor(name=name, dtype=a.dtype.name, shape=list(a.shape), data=a.tobytes())


def from_proto(t: pb.Tensor) -> np.ndarray:
    try:
        dt = np.dtype(t.dtype).newbyteorder("<")
    except TypeError as e:
        raise ValueError(f"tensor {t.name!r}: unknown dtype {t.dtype!r}") from e
    expected = int(np.prod(t.shape, dtype=np.int64)) * dt.itemsize
    if len(t.data) != expected:
        raise ValueError(f"tensor {t.name!r}: {len(t.data)} bytes do not match shape {list(t.shape)} of {t.dtype}")
    return np.frombuffer(t.data, dtype=dt).reshape(tuple(t.shape)).astype(dt.newbyteorder("="), copy=True)


def spec_to_proto(s: dict) -> pb.TensorSpec:
    return pb.TensorSpec(name=s["name"], dtype=s["dtype"], shape=[int(d) for d in s["shape"]],
                         scale=float(s.get("scale", 0.0)), zero_point=int(s.get("zero_point", 0)))
