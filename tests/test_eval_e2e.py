"""Accuracy measured on a real local agent: artifacts made by the real converters, samples streamed
through Infer, scored on the host against labels and against the FP32 source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.artifacts import Artifact
from host.client import AgentClient
from host.data import metrics as M
from host.data.datasets import load_dataset
from host.results.store import ResultStore
from host.targets import Target

N = 300
SOURCE = "tests.models_for_tests:resnet8_trained"   # ResNet-8 fitted briefly on Fashion-MNIST (cached)


def _convert(tmp: Path, platform: str, method: str) -> Artifact:
    pytest.importorskip("torch", reason="needs the 'host' extra (torch) to convert the test model")
    from host.models import load_source
    from host.quantize.base import QuantizeRequest
    from host.quantize.registry import get_converter

    src = load_source(SOURCE)
    calib = load_dataset("fashion-mnist", split="train", limit=300)
    conv = get_converter(platform)
    return conv.quantize(QuantizeRequest(source=src, method=method, out_dir=tmp, calib=calib, calib_samples=200,
                                         input_shape=src.input_shape, check=calib.take(100, 200)))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Artifact]:
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'host' extra) for .tflite from PyTorch")
    tmp = tmp_path_factory.mktemp("eval-artifacts")
    return {m: _convert(tmp, "tflite", m) for m in ("fp32", "static")}


def _host_reference(n: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from host.models import load_source

    ds = load_dataset("fashion-mnist", split="test", limit=n)
    with torch.no_grad():
        return load_source(SOURCE).torch_module()(torch.from_numpy(ds.x)).numpy(), ds.y


def test_eval_fp32_and_int8_on_the_local_agent(agent, artifacts, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra) on the agent")
    from host.eval import evaluate

    store = ResultStore(tmp_path / "results.sqlite")
    target = Target(name="bench-local")
    ref, labels = _host_reference(N)
    ref_top1 = M.topk_accuracy(ref, labels, 1)
    logs: list[str] = []
    with AgentClient(agent.address) as client:
        recs = {}
        for method, art in artifacts.items():
            client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
            recs[method] = evaluate(client, target, art, "fashion-mnist", N, store, log=logs.append)

    fp32, int8 = recs["fp32"], recs["static"]
    # FP32 on the device is the source model: same decisions, same accuracy as torch on the host
    assert fp32["n"] == N and fp32["dataset"] == "fashion-mnist:test"
    assert fp32["agreement"]["top1_agreement"] >= 0.995 and fp32["agreement"]["cosine"] > 0.9999
    assert abs(fp32["metrics"]["top1"] - ref_top1) <= 1.5 / N
    assert fp32["reference_metrics"]["top1"] == pytest.approx(ref_top1)
    assert fp32["metrics"]["top1"] > 0.6          # a trained model, not chance (0.1)
    # int8 I/O: inputs were quantized with the manifest's scale/zero-point, outputs dequantized
    assert art_io_is_int8(artifacts["static"])
    assert int8["agreement"]["top1_agreement"] > 0.9 and int8["agreement"]["cosine"] > 0.98
    assert abs(int8["metrics"]["top1"] - ref_top1) < 0.05
    assert int8["latency_ms_mean"] > 0 and any("agreement" in line for line in logs)

    stored = {e["method"]: e for e in store.evals(target="bench-local")}
    assert set(stored) == {"fp32", "static"}
    assert stored["static"]["metrics"]["top1"] == pytest.approx(int8["metrics"]["top1"])
    assert stored["static"]["sha256"] == artifacts["static"].manifest.sha256
    store.close()


def art_io_is_int8(art: Artifact) -> bool:
    return art.manifest.inputs[0].dtype == "int8" and art.manifest.inputs[0].scale > 0


def test_mismatched_data_is_one_clear_error(agent, artifacts, tmp_path):
    from host.eval import EvalError, evaluate

    with AgentClient(agent.address) as client, pytest.raises(EvalError, match="segmentation data set"):
        evaluate(client, Target(name="x"), artifacts["fp32"], "shapes-seg", 5, None, log=lambda m: None)


def test_host_eval_cli_on_local_target(artifacts, tmp_path, monkeypatch, capsys):
    """`host eval --target local` starts the local agent itself (state under EDGEBENCH_HOME)."""
    from host.cli import main
    from host.targets import get_target
    from host.transports import open_transport

    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / "home"))
    db = tmp_path / "r.sqlite"
    try:
        rc = main(["eval", "--target", "local", "--artifact", str(artifacts["static"].path), "--data",
                   "fashion-mnist", "--limit", "100", "--db", str(db), "--json"])
    finally:
        open_transport(get_target("local")).stop_agent()
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 100 and out["target"] == "local" and 0.6 < out["metrics"]["top1"] <= 1.0
    assert out["agreement"]["top1_agreement"] > 0.85
    (rec,) = ResultStore(db).evals()
    assert rec["id"] == out["id"] and rec["method"] == "static"


def test_segmenter_dense_outputs_on_the_device(agent, tmp_path, monkeypatch):
    """The zoo U-Net (briefly trained into a private cache) as a .ptl on the agent: the device's
    per-pixel logits give the same mIoU as the source model on the host."""
    pytest.importorskip("torch", reason="needs torch (the 'host' and 'torch' extras)")
    from host.eval import evaluate
    from host.models import load_source
    from host.quantize.base import QuantizeRequest
    from host.quantize.registry import get_converter
    from host.zoo.train import train

    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path / "cache"))
    train("segmenter", epochs=1, limit=96, progress=None)
    src = load_source("host.zoo.models:segmenter")
    art = get_converter("pytorch").quantize(QuantizeRequest(source=src, method="fp32", out_dir=tmp_path,
                                                            input_shape=src.input_shape))
    assert art.manifest.task == "segmentation"
    with AgentClient(agent.address) as client:
        client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        rec = evaluate(client, Target(name="t"), art, "shapes-seg", 24, None, log=lambda m: None)
    assert rec["n"] == 24 and rec["dataset"] == "shapes-seg:test"
    assert rec["agreement"]["top1_agreement"] > 0.999         # per-pixel argmax, device vs host
    assert rec["metrics"]["miou"] == pytest.approx(rec["reference_metrics"]["miou"], abs=1e-3)
    assert 0 < rec["metrics"]["pixel_acc"] <= 1
