"""User-facing messages, checked as a class: every refusal reads as English ("an ONNX model", never "a onnx
model"), every platform a refusal suggests accepts that source, tensor names are quoted ("input 'input' takes
shape", never "input input has shape"), and library prints never reach stdout (it carries --json)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from host.models import KIND_PHRASES, ModelSource
from host.quantize.base import METHODS
from host.quantize.registry import get_converter, platform_names

SUGGESTION = re.compile(r"--platform ((?:[a-z]+(?:/|, | or ))*[a-z]+)(?: --method ([a-z0-9]+))?")


def _source(kind: str) -> ModelSource:
    return ModelSource(kind, f"model.{kind}", "model", "")     # no input shape: nothing is loaded


def _refusals() -> list[tuple[str, str, str, str]]:
    out = []
    for platform in platform_names():
        try:
            conv = get_converter(platform)
        except Exception:   # noqa: BLE001 - a platform not installed here has nothing to say
            continue
        for kind in KIND_PHRASES:
            for method in METHODS:
                reason = conv.unsupported_reason(_source(kind), method)
                if reason:
                    out.append((platform, kind, method, reason))
    return out


def test_refusals_are_one_line_english() -> None:
    refusals = _refusals()
    assert len(refusals) > 20
    for platform, kind, method, reason in refusals:
        assert "\n" not in reason
        assert not re.search(r"\ba [aeiou]", reason, re.IGNORECASE), (platform, kind, method, reason)
        assert f" {kind} model" not in reason, (platform, kind, method, reason)   # "a savedmodel model"


def test_every_suggested_platform_takes_the_source() -> None:
    """A refusal that says `--platform X` (or `--platform X --method M`) must not send the user to another
    refusal: the pytorch refusal once suggested tflite for ONNX, which tflite then refused."""
    checked = 0
    for platform, kind, method, reason in _refusals():
        for names, suggested_method in SUGGESTION.findall(reason):
            for other in re.split(r"/|, | or ", names):
                m = suggested_method or method
                again = get_converter(other).unsupported_reason(_source(kind), m)
                assert again is None, (f"{platform}/{method} on {kind} suggests {other} {m}, which says: {again}")
                checked += 1
    assert checked >= 4


def test_litert_names_the_input_in_quotes(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="needs the 'tflite' extra (ai-edge-litert)")
    from agent.runtimes.base import RunnerError
    from host.quantize.host_run import load_runner

    runner = load_runner(Path("host/reference/noise_reference.tflite"), "tflite")
    spec = runner.input_specs()[0]
    shape = [d if d > 0 else 1 for d in spec.shape]
    wrong = np.zeros([d + 1 for d in shape], dtype=spec.dtype)
    with pytest.raises(RunnerError) as e:
        runner.infer({spec.name: wrong})
    assert f"input {spec.name!r} takes shape {list(spec.shape)}" in str(e.value), str(e.value)
    with pytest.raises(RunnerError) as e:
        runner.infer({spec.name: np.zeros(shape, dtype=np.int16)})
    assert f"input {spec.name!r} wants" in str(e.value)
    runner.close()


def test_calibration_prints_never_reach_stdout(capsys, tmp_path: Path) -> None:
    """onnxruntime's percentile calibrator prints its settings; every quantize_cleanly caller (host quantize,
    host zoo export, the demo) sends them where third-party output goes, not to stdout (--json)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from host.data.datasets import Dataset
    from host.models import load_source
    from host.quantize.base import QuantizeRequest, quantize_cleanly

    src = tmp_path / "tiny.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                          torch.nn.Linear(4 * 6 * 6, 3)).eval(),
                      (torch.zeros(1, 1, 8, 8),), str(src), dynamo=False)
    x = np.random.default_rng(0).normal(size=(24, 1, 8, 8)).astype(np.float32)
    calib = Dataset("calib", x, None, [])
    req = QuantizeRequest(source=load_source(str(src)), method="static", out_dir=tmp_path / "out", calib=calib,
                          calib_method="percentile", calib_samples=16, extra={"check_samples": 8})
    capsys.readouterr()
    quantize_cleanly(get_converter("tensorrt"), req)
    cap = capsys.readouterr()
    assert cap.out == "", cap.out[:500]
    assert "histogram bins" in cap.err          # it went to stderr (outside quiet(): the log inside it)
