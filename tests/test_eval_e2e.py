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
    assert fp32["metrics"]["top1"] > 0.5          # a trained model, not chance (0.1); see the note below
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
    # a ResNet-8 fitted for one epoch on 2000 views: its test top-1 on 100 views moved between 0.60 and 0.75 with
    # float nondeterminism of the training run (same seed, same machine), so the floor is a sanity check only
    assert out["n"] == 100 and out["target"] == "local" and 0.5 < out["metrics"]["top1"] <= 1.0
    assert out["agreement"]["top1_agreement"] > 0.85
    (rec,) = ResultStore(db).evals()
    assert rec["id"] == out["id"] and rec["method"] == "static"


@pytest.fixture(scope="module")
def zoo_artifacts(tmp_path_factory) -> dict[str, Artifact]:
    """The zoo detector and segmenter (trained on first use, then from the cache) exported by
    host.zoo.export with small calibration/check sets: tflite fp32 + static int8 of both, and the
    segmenter as a pytorch fp32 .ptl."""
    pytest.importorskip("torch", reason="needs torch (the 'host' extra) for the reference models")
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'host' extra) for .tflite from PyTorch")
    from host.zoo.export import export

    tmp = tmp_path_factory.mktemp("zoo-artifacts")
    arts: dict[str, Artifact] = {}
    for name, platform, methods in (("detector", "tflite", ["fp32", "static"]),
                                    ("segmenter", "tflite", ["fp32", "static"]), ("segmenter", "pytorch", ["fp32"])):
        res = export(name, [platform], methods, tmp / name, calib_samples=64, check_samples=32, log=lambda m: None)
        assert not res["skipped"], res["skipped"]
        for art in res["artifacts"]:
            arts[f"{name}/{art.manifest.platform}/{art.manifest.method}"] = art
    return arts


def _push_and_eval(agent, arts: list[Artifact], data: str, n: int, store, target: str) -> list[dict]:
    from host.eval import evaluate

    with AgentClient(agent.address) as client:
        out = []
        for art in arts:
            client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
            out.append(evaluate(client, Target(name=target), art, data, n, store, log=lambda m: None))
    return out


def test_zoo_detector_fp32_and_int8_on_the_device(agent, zoo_artifacts, tmp_path):
    """The CenterNet detector as .tflite fp32 and static int8 on a real agent: the device's raw maps are
    decoded (+ NMS) on the host and scored with COCO-style mAP on a few hundred shapes-det images."""
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra) on the agent")
    from host.zoo.train import cached_info

    n = 300
    fp32_art, int8_art = zoo_artifacts["detector/tflite/fp32"], zoo_artifacts["detector/tflite/static"]
    assert fp32_art.manifest.task == "detection" and art_io_is_int8(int8_art)
    store = ResultStore(tmp_path / "results.sqlite")
    fp32, int8 = _push_and_eval(agent, [fp32_art, int8_art], "shapes-det", n, store, "det-local")
    cached = cached_info("detector")["metrics"]       # the zoo's own score (full 500-image test split)

    for rec in (fp32, int8):
        assert rec["n"] == n and rec["dataset"] == "shapes-det:test" and rec["task"] == "detection"
        assert 0 < rec["metrics"]["map50_95"] <= rec["metrics"]["map50"] <= 1.0
        assert len(rec["metrics"]["per_class_ap50"]) == 3
    # FP32 on the device is the source model: same maps, same mAP as the host, close to the zoo's figure
    assert fp32["agreement"]["cosine"] > 0.99999 and fp32["agreement"]["top1_agreement"] > 0.999
    assert fp32["metrics"]["map50"] == pytest.approx(fp32["reference_metrics"]["map50"], abs=1e-3)
    assert fp32["metrics"]["map50_95"] == pytest.approx(fp32["reference_metrics"]["map50_95"], abs=1e-3)
    assert fp32["metrics"]["map50"] == pytest.approx(cached["map50"], abs=0.02)
    assert fp32["metrics"]["map50_95"] == pytest.approx(cached["map50_95"], abs=0.03)
    assert fp32["metrics"]["map50"] > 0.9 and fp32["metrics"]["map50_95"] > 0.7
    # int8 I/O quantized/dequantized with the manifest's scales: within a few points of FP32
    assert abs(int8["metrics"]["map50"] - fp32["metrics"]["map50"]) < 0.03
    assert abs(int8["metrics"]["map50_95"] - fp32["metrics"]["map50_95"]) < 0.03
    # heatmap argmax per cell is noisy on empty background cells, hence the looser agreement
    assert int8["agreement"]["cosine"] > 0.999 and int8["agreement"]["top1_agreement"] > 0.9

    stored = {e["method"]: e for e in store.evals(target="det-local")}
    assert set(stored) == {"fp32", "static"}
    assert stored["static"]["sha256"] == int8_art.manifest.sha256 and stored["static"]["task"] == "detection"
    assert stored["static"]["metrics"]["map50_95"] == pytest.approx(int8["metrics"]["map50_95"])
    assert stored["fp32"]["metrics"]["map50"] == pytest.approx(fp32["metrics"]["map50"])
    store.close()


def test_zoo_segmenter_int8_on_the_device(agent, zoo_artifacts, tmp_path):
    """The zoo U-Net on a real agent: as fp32 .tflite (channels-last I/O) and .ptl (NCHW) it gives the
    host's mIoU; as static int8 .tflite it keeps a high mIoU with a small drop."""
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra) on the agent")
    n = 200
    fp32_art, int8_art = zoo_artifacts["segmenter/tflite/fp32"], zoo_artifacts["segmenter/tflite/static"]
    assert fp32_art.manifest.task == "segmentation" and art_io_is_int8(int8_art)
    store = ResultStore(tmp_path / "results.sqlite")
    fp32, int8 = _push_and_eval(agent, [fp32_art, int8_art], "shapes-seg", n, store, "seg-local")
    # the .ptl runs ~40 ms a sample on the lite interpreter: a small slice checks its dense outputs
    (ptl,) = _push_and_eval(agent, [zoo_artifacts["segmenter/pytorch/fp32"]], "shapes-seg", 24, None, "seg-local")

    for rec in (fp32, int8):
        assert rec["n"] == n and rec["dataset"] == "shapes-seg:test" and 0 < rec["metrics"]["pixel_acc"] <= 1
        assert len(rec["metrics"]["per_class_iou"]) == 4
    for rec in (fp32, ptl):                                      # FP32 on the device is the source model
        assert rec["agreement"]["top1_agreement"] > 0.999         # per-pixel argmax, device vs host
        assert rec["metrics"]["miou"] == pytest.approx(rec["reference_metrics"]["miou"], abs=1e-3)
    assert ptl["n"] == 24 and ptl["format"] != fp32["format"]
    assert fp32["metrics"]["miou"] > 0.85                        # the trained zoo model (~0.91), not background
    assert min(fp32["metrics"]["per_class_iou"][1:]) > 0.75      # every shape class is segmented
    assert int8["metrics"]["miou"] > 0.85
    assert fp32["metrics"]["miou"] - int8["metrics"]["miou"] < 0.02   # the int8 drop
    assert int8["agreement"]["top1_agreement"] > 0.99 and int8["agreement"]["cosine"] > 0.999
    assert {e["method"] for e in store.evals(target="seg-local")} == {"fp32", "static"}
    store.close()


def test_tensorrt_qdq_on_the_onnxruntime_stand_in_and_unlabelled_data(agent, tmp_path):
    """A TensorRT Q/DQ artifact evaluated on a device without TensorRT: ONNX Runtime runs it with Q/DQ
    semantics (not its saturating fused kernels), and the record says it is a stand-in. Data without labels
    (an .npy of images) is scored by agreement with the FP32 source alone."""
    pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' or 'onnx' extra (onnxruntime)")
    from host.eval import evaluate

    art = _convert(tmp_path, "tensorrt", "static")
    unlabelled = tmp_path / "images.npy"
    np.save(unlabelled, load_dataset("fashion-mnist", split="test", limit=200).x)
    with AgentClient(agent.address) as client:
        client.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        rec = evaluate(client, Target(name="no-trt"), art, str(unlabelled), 200, None, log=lambda m: None)
    assert rec["runtime"]["name"] == "onnxruntime"
    assert any(f.startswith("stand-in(onnxruntime") for f in rec["flags"])
    assert rec["metrics"] == {}                                   # no labels: nothing invented
    assert rec["agreement"]["top1_agreement"] >= 0.95 and rec["agreement"]["cosine"] > 0.98
