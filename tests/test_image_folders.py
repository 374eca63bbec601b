"""Image folders as users have them: a flat folder of images (no class sub-folders) calibrates, and
`host eval` / `deploy --data` preprocess a folder as the artifact's manifest recorded, without --preprocess
repeated. Real CLI, real ONNX Runtime calibration, real local agent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.data.datasets import DatasetError, load_dataset
from tests.conftest import host

SIZES = [(20, 24), (30, 30), (17, 40), (64, 48), (25, 25), (33, 21), (40, 40), (18, 18)]


def flat_folder(root: Path) -> Path:
    """Photos-like images of different sizes straight in one folder: smooth gradients plus noise."""
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), 40 * i)], -1) + rng.integers(0, 30, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def classifier_onnx(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(path), input_names=["input"], output_names=["output"],
                      opset_version=17, dynamo=False)
    return path


def test_flat_folder_loads_without_labels(tmp_path):
    from host.data.datasets import Preprocess

    ds = load_dataset(str(flat_folder(tmp_path / "flat")), pp=Preprocess.parse("resize=16x16"))
    assert ds.x.shape == (len(SIZES), 3, 16, 16) and ds.y is None and ds.classes == []
    with pytest.raises(DatasetError, match="differ in size"):
        load_dataset(str(tmp_path / "flat"))      # no resize: still a one-line error, not a wrong guess
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither images nor class sub-folders"):
        load_dataset(str(tmp_path / "empty"))


def test_flat_folder_calibrates_and_eval_uses_the_manifest_preprocessing(env, tmp_path):
    folder = flat_folder(tmp_path / "flat")
    src = classifier_onnx(tmp_path / "clf.onnx")
    out = tmp_path / "out"
    r = host(env, "quantize", "--model", str(src), "--platform", "tensorrt", "--method", "static", "--calib",
             str(folder), "--calib-samples", "4", "--check-samples", "4", "--preprocess", "resize=16x16,mean=0.5,std=0.25",
             "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)[0]
    manifest = json.loads(Path(res["manifest"]).read_text())
    assert manifest["calibration"]["samples"] == 4 and manifest["calibration"]["dataset"].startswith("folder:")
    assert manifest["preprocessing"]["resize"] == [16, 16] and manifest["preprocessing"]["mean"] == [0.5]

    db = tmp_path / "r.sqlite"
    # no --preprocess: the folder's images differ in size, and only the manifest's resize makes them fit
    r = host(env, "eval", "--target", "local", "--artifact", res["path"], "--data", str(folder), "--db", str(db),
             "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout)
    assert rec["n"] == len(SIZES) and rec["preprocess_mismatch"] == []
    assert rec["agreement"]["cosine"] > 0.95, rec["agreement"]      # unlabelled: scored against the FP32 source
    assert rec["input"]["shapes"] == {"input": [1, 3, 16, 16]} and rec["input"]["kind"] == "user"

    r = host(env, "deploy", "--target", "local", "--artifact", res["path"], "--data", str(folder), "--repeats", "1",
             "--runs", "5", "--min-seconds", "0", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads(r.stdout)[0]["eval"]
    assert "error" not in ev and ev["n"] == len(SIZES) and ev["agreement"]["cosine"] > 0.95, ev
