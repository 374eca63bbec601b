"""host analyze + quantize --min-agreement on a model with one layer made hard to quantize (tests/models_for_analyze):
the analysis names it first on each platform, the fallback keeps exactly it float and meets the budget, the artifact
shows it float, and a second analysis comes from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch", reason="needs the 'executorch' extra")
pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' extra (onnxruntime)")

from host.cli import main  # noqa: E402

MODEL = "tests.models_for_analyze:outlier_head"
PLATFORMS = ["pytorch", "executorch", "tflite", "tensorrt"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("analyze")
    rng = np.random.default_rng(0)
    for name in ("calib", "check"):
        np.save(d / f"{name}.npy", rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    np.savez(d / "labelled.npz", x=rng.standard_normal((16, 3, 16, 16)).astype(np.float32),
             y=rng.integers(0, 10, 16))
    return {"dir": str(d), "calib": str(d / "calib.npy"), "check": str(d / "check.npy"),
            "labelled": str(d / "labelled.npz"), "cache": str(d / "cache")}


@pytest.fixture(autouse=True)
def cache(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEBENCH_CACHE", data["cache"])


def _analyze(data: dict[str, str], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    rc = main(["analyze", "--model", MODEL, "--platform", ",".join(PLATFORMS), "--calib", data["calib"],
               "--check-data", data["check"], "--numerics-samples", "8", "--json",
               "--html", str(Path(data["dir"]) / "a.html")])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_analyze_ranks_the_outlier_layer_first_and_caches(data: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    results = _analyze(data, capsys)
    assert [r["platform"] for r in results] == PLATFORMS
    for r in results:
        assert not r["cache_hit"]
        assert {row["layer"] for row in r["layers"]} == {"c1", "c2", "head"}   # source module paths
        rows = {row["layer"]: row for row in r["layers"]}
        assert all(row["precision"] == "int8" and row["weight"]["per_channel"] for row in rows.values())
        assert rows["head"]["output"]["range"][0] < -300          # the outlier channel's range, as quantized
        assert all(row["sqnr_db"] > 20 and row["cosine"] > 0.99 for row in rows.values()), rows
        assert r["baseline"]["metric"] < 0.5                       # plain int8 loses most predictions
        first, *rest = r["sensitivity"]
        assert first["layer"] == "head" and first["metric"] > 0.95, r["sensitivity"]
        assert all(s["gain"] < 0.2 for s in rest)
    assert "<svg" in (Path(data["dir"]) / "a.html").read_text()
    again = _analyze(data, capsys)
    assert all(r["cache_hit"] for r in again)
    assert [r["sensitivity"] for r in again] == [r["sensitivity"] for r in results]


def test_fallback_keeps_only_the_outlier_layer_float(data: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from host.quantize.tensorrt import ops_by_precision

    out = Path(data["dir"]) / "out"
    rc = main(["quantize", "--model", MODEL, "--platform", ",".join(PLATFORMS), "--method", "static",
               "--calib", data["calib"], "--check-data", data["check"], "--min-agreement", "0.95",
               "--out", str(out), "--json"])
    assert rc == 0
    arts = {a["platform"]: a for a in json.loads(capsys.readouterr().out)}
    for p, a in arts.items():
        fb = a["checks"]["fallback"]
        assert fb["float_layers"] == ["head"], (p, fb)
        assert a["precision"] == "mixed" and "head" in fb["why"]
        assert fb["steps"][0]["value"] < 0.95 <= fb["reached"]
        assert a["checks"]["agreement"]["top1_agreement"] >= 0.95   # the artifact itself, on its own runtime
    # the artifacts prove it: one conv float, the other two int8
    trt_ops = ops_by_precision(onnx.load(arts["tensorrt"]["path"]))
    assert trt_ops["fp32"]["Conv"] == 1 and trt_ops["int8"]["Conv"] == 2, trt_ops
    et_ops = arts["executorch"]["checks"]["ops_by_precision"]
    assert et_ops["fp32"]["aten.conv2d.default"] == 1 and et_ops["int8"]["aten.conv2d.default"] == 2
    pt_ops = arts["pytorch"]["checks"]["ops_by_precision"]   # read from the .ptl's TorchScript graph
    assert pt_ops["fp32"]["aten::_convolution"] == 1 and pt_ops["int8"]["quantized::conv2d"] == 2, pt_ops
    tfl_ops = arts["tflite"]["checks"]["ops_by_precision"]   # read from the .tflite's tensors
    assert tfl_ops["fp32"]["CONV_2D"] == 1 and tfl_ops["int8"]["CONV_2D"] == 2, tfl_ops


@pytest.mark.parametrize("extra, message", [
    (["--max-drop", "1"], "needs labelled check data"),
    (["--min-agreement", "1.5"], "must be in (0, 1]"),
    (["--min-agreement", "0.9", "--method", "dynamic"], "apply to --method static"),
    # the one layer ranked (lowest SQNR: not the outlier head, whose SQNR is the highest) cannot make it
    (["--min-agreement", "0.95", "--fallback-layers", "1"], "not reached: with 1 layer(s) float"),
])
def test_budget_errors_are_one_line(data: dict[str, str], capsys: pytest.CaptureFixture[str], extra: list[str],
                                    message: str) -> None:
    args = ["quantize", "--model", MODEL, "--platform", "executorch", "--method", "static", "--calib", data["calib"],
            "--check-data", data["check"], "--out", str(Path(data["dir"]) / "bad")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] or any(message in line for line in err), err
    assert not any("Traceback" in line for line in err)


def test_unknown_float_layer_is_one_line(data: dict[str, str]) -> None:
    import onnx
    import torch

    from host.quantize.base import QuantizeError
    from host.quantize.onnx_layers import nodes_for_layers
    from host.quantize.tensorrt import export_onnx
    from tests.models_for_analyze import outlier_head

    path = Path(data["dir"]) / "fp32.onnx"
    export_onnx(outlier_head(), torch.randn(1, 3, 16, 16), path)
    assert len(nodes_for_layers(onnx.load(str(path)), ["head"])) == 1
    with pytest.raises(QuantizeError, match="no quantizable layer 'heads'"):
        nodes_for_layers(onnx.load(str(path)), ["heads"])


def test_reused_calibration_equals_a_fresh_one(data: dict[str, str]) -> None:
    """Sensitivity builds copy the all-int8 build's observers instead of calibrating again; the result must be
    the graph a fresh calibration gives (relu6_net has observers shared between tensors, the tricky case)."""
    from host.analyze.fx import FXBackend
    from host.analyze.pt2e import PT2EBackend
    from host.models import load_source
    from host.quantize.base import QuantizeRequest

    req = QuantizeRequest(source=load_source("tests.models_for_tests:relu6_net"), method="static",
                          out_dir=Path(data["dir"]))
    x = np.load(data["calib"])
    for backend in (PT2EBackend, FXBackend):
        b = backend(req, x)
        b.build([])
        for floats in (["c2"], ["c1", "fc"]):
            reused, fresh = b.build(floats), backend(req, x).build(floats)
            np.testing.assert_array_equal(b.outputs(reused, x[:8]), b.outputs(fresh, x[:8]))


def test_keep_float_names_source_layers(data: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """--keep-float: the named layer stays float with no search (pytorch: FX set_module_name), recorded in the
    manifest; a misspelt name is one line with the near names, never an all-int8 artifact."""
    out = Path(data["dir"]) / "keep"
    args = ["quantize", "--model", MODEL, "--platform", "pytorch", "--method", "static", "--calib", data["calib"],
            "--check-data", data["check"], "--out", str(out), "--json"]
    assert main(args + ["--keep-float", "heads"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "has no layer 'heads' (did you mean 'head'?)" in err[-1], err
    assert not out.exists() or not list(out.iterdir())
    assert main(args + ["--keep-float", "head"]) == 0
    (art,) = json.loads(capsys.readouterr().out)
    assert art["precision"] == "mixed" and art["checks"]["fallback"]["float_layers"] == ["head"]
    assert art["checks"]["ops_by_precision"]["fp32"]["aten::_convolution"] == 1
    assert art["checks"]["agreement"]["top1_agreement"] >= 0.95


def test_whole_blocks_go_float_with_their_layers() -> None:
    from host.analyze.fallback import with_containers

    layers = ["stem", "blocks.0.a", "blocks.0.b", "blocks.1.a", "blocks.1.b", "head"]
    assert with_containers(["blocks.0.a"], layers) == ["blocks.0.a"]
    assert with_containers(["blocks.0.b", "blocks.0.a"], layers) == ["blocks.0.b", "blocks.0.a", "blocks.0"]
    assert with_containers(layers[1:5], layers)[4:] == ["blocks", "blocks.0", "blocks.1"]   # nested ones too
    assert "" not in with_containers(layers, layers)                  # never the model's root
