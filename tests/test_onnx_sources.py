"""A third-party .onnx reaches every torch-based platform (pytorch, executorch, tflite via litert-torch) through
onnx2torch, checked against ONNX Runtime; a graph onnx2torch cannot convert is one line naming tensorrt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.artifacts import load_artifact
from host.cli import main

torch = pytest.importorskip("torch", reason="needs the 'torch' extra (torch==2.13.0)")
nn = torch.nn


class DwClassifier(nn.Module):
    """conv -> depthwise -> pointwise -> global mean -> linear: the shape of a mobile classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = nn.functional.relu6(self.dw(x))
        x = torch.relu(self.pw(x))
        return self.fc(x.mean((2, 3)))


class GeluClassifier(DwClassifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.gelu(self.pw(self.dw(self.stem(x)))).mean((2, 3)))


def _export(model: nn.Module, path: Path, opset: int) -> Path:
    torch.manual_seed(0)
    model = model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"])
    return path


def _quantize(capsys, *args: str) -> tuple[int, list[dict], str]:
    rc = main(["quantize", *args, "--json"])
    cap = capsys.readouterr()
    out = json.loads(cap.out) if cap.out.strip().startswith("[") else []
    return rc, out, cap.err


@pytest.fixture(autouse=True)
def _needs_onnx2torch() -> None:
    from host.models.onnx_torch import _import_onnx2torch

    try:
        _import_onnx2torch()
    except ImportError:
        pytest.skip("needs onnx2torch (make setup installs it with --no-deps)")


def test_onnx_classifier_on_every_torch_platform(capsys, tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _export(DwClassifier(), tmp_path / "dwnet.onnx", opset=18)   # opset 18: Reduce* axes as an input
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(64, 1, 28, 28)).astype(np.float32))
    rc, res, err = _quantize(capsys, "--model", str(src), "--platform", "pytorch,executorch,tflite",
                             "--method", "fp32,static", "--calib", str(calib), "--calib-samples", "32",
                             "--check-samples", "32", "--out", str(tmp_path / "out"))
    assert rc == 0, err
    got = {(r["platform"], r["method"]): r for r in res}
    assert set(got) == {(p, m) for p in ("pytorch", "executorch", "tflite") for m in ("fp32", "static")}, err
    for (platform, method), r in got.items():
        agr = r["checks"]["agreement"]     # against the .onnx run by ONNX Runtime
        if method == "fp32":
            assert agr["top1_agreement"] == 1.0 and agr["max_abs"] < 1e-4, (platform, agr)
        else:
            assert r["precision"] == "int8" and agr["cosine"] >= 0.98, (platform, r["precision"], agr)
        src_rec = load_artifact(r["path"]).manifest.source
        assert src_rec["kind"] == "onnx" and src_rec["spec"] == str(src)
        conv = src_rec["converted_with"]
        assert conv["converter"].startswith("onnx2torch ") and conv["max_rel_error_vs_onnxruntime"] < 1e-3
        assert "opset 18 taken down to 17" in conv["opset"]


def test_unsupported_op_is_one_line_that_names_tensorrt(capsys, tmp_path: Path) -> None:
    src = _export(GeluClassifier(), tmp_path / "gelunet.onnx", opset=20)   # Gelu: an op onnx2torch 1.5.15 lacks
    out = tmp_path / "out"
    rc, res, err = _quantize(capsys, "--model", str(src), "--platform", "pytorch,executorch,tflite,tensorrt",
                             "--out", str(out))
    assert rc == 0, err
    assert [r["platform"] for r in res] == ["tensorrt"]
    skips = [line for line in err.splitlines() if line.startswith("[quantize] skipping")]
    assert len(skips) == 3, err
    for line in skips:
        assert "Gelu (not in onnx2torch" in line and "--platform tensorrt takes the .onnx" in line, line
    # one platform: the reason is the error, one line, exit 2, nothing written
    rc = main(["quantize", "--model", str(src), "--platform", "executorch", "--out", str(tmp_path / "o2")])
    lines = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("[quantize]")]
    assert rc == 2 and len(lines) == 1 and "Gelu" in lines[0] and "--platform tensorrt" in lines[0], lines
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())
