"""ONNX Runtime calibration with bounded memory: peak RSS of a real `host quantize` measured in a subprocess on a
model with large activations, and a calibration that cannot fit refused before it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, C, HW = 24, 16, 256     # 24 samples x ~100 MiB of activations each: ~2.4 GB if all were kept

# Runs `host quantize` in a child and reports the child's peak RSS (ru_maxrss, KiB on Linux).
MEASURE = """
import resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "host.cli", *sys.argv[1:]], capture_output=True, text=True)
sys.stderr.write(r.stderr)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def wide_onnx(path: Path) -> Path:
    """1x1 convolutions at 256x256 with 16 channels: little compute, 4 MiB per activation, dynamic H x W."""
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(12):
        layers += [torch.nn.Conv2d(C, C, 1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).eval()
    torch.onnx.export(net, (torch.randn(1, C, HW, HW),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    return path


def quantize(tmp_path: Path, *args: str) -> tuple[int, float, str]:
    env = dict(os.environ, EDGEBENCH_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", MEASURE, "quantize", *args], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
    code, kib = r.stdout.split()
    return int(code), int(kib) / 1024, r.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("calibmem")
    data = d / "calib.npy"
    np.save(data, np.random.default_rng(0).standard_normal((SAMPLES + 2, C, HW, HW)).astype(np.float32))
    return wide_onnx(d / "wide.onnx"), data


@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_calibration_peak_rss_is_bounded(model, tmp_path, method):
    from host.quantize.calib_memory import activation_bytes

    src, data = model
    per_sample, _ = activation_bytes(src, (1, C, HW, HW))
    assert per_sample > 80 << 20            # the model is what the test needs: large activations
    out = tmp_path / "out"
    code, peak_mb, err = quantize(tmp_path, "--model", str(src), "--platform", "tensorrt", "--method", "static",
                                  "--calib", str(data), "--calib-samples", str(SAMPLES), "--calib-method", method,
                                  "--check-samples", "2", "--input-shape", f"1,{C},{HW},{HW}", "--out", str(out),
                                  "--json")
    assert code == 0, err[-3000:]
    unbounded_mb = SAMPLES * per_sample / 2**20      # what ORT keeps without the bound, before its own copies
    print(f"peak RSS {peak_mb:.0f} MiB; all {SAMPLES} samples' activations alone would be {unbounded_mb:.0f} MiB")
    assert peak_mb < 0.6 * unbounded_mb, (peak_mb, unbounded_mb)
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    mem = manifest["calibration"]["memory"]
    assert 1 <= mem["chunk"] < SAMPLES and SAMPLES % mem["chunk"] == 0, mem
    assert manifest["calibration"]["samples"] == SAMPLES
    # every chunk was folded into the ranges (none dropped): the Q/DQ graph still tracks its fp32 source
    assert manifest["checks"]["agreement"]["cosine"] > 0.98, manifest["checks"]["agreement"]


def test_calibration_that_cannot_fit_is_refused_before_it_starts(model, tmp_path):
    src, data = model
    out = tmp_path / "out"
    # 16 x 40000 x 40000 floats per activation: terabytes; refused from the estimate, in one line, exit 2
    code, peak_mb, err = quantize(tmp_path, "--model", str(src), "--platform", "tensorrt", "--method", "static",
                                  "--calib", str(data), "--calib-samples", "4", "--input-shape", f"1,{C},40000,40000",
                                  "--out", str(out))
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "GiB is available" in errors[0] and "Traceback" not in err, err
    assert not (out.exists() and list(out.iterdir()))
    assert peak_mb < 2048                      # nothing was attempted
