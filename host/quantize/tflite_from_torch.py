"""PyTorch -> `.tflite` with litert-torch (no TensorFlow needed), for the tflite platform.

fp32     litert_torch.convert(module, example)
dynamic  PT2E with litert-torch's PT2EQuantizer, dynamic config (int8 weights, float activations;
         lowered to LiteRT's dynamic-range kernels)
static   PT2E static int8: prepare_pt2e -> calibrate -> convert_pt2e -> convert with the quantizer;
         the model gets int8 input and output tensors (litert-torch offers no float-I/O variant)
qat      PT2E QAT with litert-torch's QAT config (fake-quant on weights and activations), BN folded
         into the convs first: prepare_qat_pt2e -> fine-tune (host.quantize.qat) -> convert_pt2e ->
         convert, int8 like static

Activation observers follow --calib-method through host.quantize.calibration (minmax = MinMax,
percentile = 99.99 % percentile, entropy = litert-torch's own default HistogramObserver).
The torch.export graph is specialised to the example batch (batch 1 from the source's input shape).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

from host.quantize.base import QuantizeError, QuantizeRequest
from host.quantize.calibration import OBSERVER_NAMES, calib_array, run_torch_calibration, torch_act_observer
from host.quantize.pt2e_clamp import with_fused_clamps
from host.quiet import library_stream


def litert_config(method: str, calib_method: str, per_channel: bool) -> Any:
    """litert-torch's symmetric int8 config with the activation observer --calib-method asks for."""
    from litert_torch.quantize import pt2e_quantizer as pq

    cfg = pq.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=(method == "dynamic"),
                                               is_qat=(method == "qat"))
    if method in ("dynamic", "qat") or calib_method == "entropy":   # QAT: fake-quant with moving averages
        return cfg
    act = dataclasses.replace(cfg.input_activation,
                              observer_or_fake_quant_ctr=torch_act_observer(calib_method, "pt2e", eps=2 ** -12))
    return dataclasses.replace(cfg, input_activation=act, output_activation=act)


CALIB_BATCH = 32


def tflite_quantizer(req: QuantizeRequest) -> Any:
    """litert-torch's PT2EQuantizer for req.method, conv/linear + ReLU6 quantized as one op (TFLite fuses RELU6:
    host.quantize.pt2e_clamp) and the modules in req.extra["float_layers"] kept float (host.analyze's fallback)."""
    from litert_torch.quantize import pt2e_quantizer as pq

    base = _qat_quantizer() if req.method == "qat" else pq.PT2EQuantizer()
    return with_fused_clamps(base.set_global(litert_config(req.method, req.calib_method, req.per_channel)),
                             req.extra.get("float_layers"))


def _qat_quantizer() -> Any:
    from litert_torch.quantize import pt2e_quantizer as pq

    class QATQuantizer(pq.PT2EQuantizer):
        """litert-torch's quantizer without its conv+BN QAT patterns: with torch 2.13 / torchao 0.18 they
        fail to build (torchao's pattern helper hands torch.export a function; it wants a Module). BN is
        folded into the conv first instead, so QAT fine-tunes conv weights with BN frozen, the usual
        choice when fine-tuning a trained network; the conv patterns then annotate every conv."""

        STATIC_QAT_ONLY_OPS: list[str] = []

    return QATQuantizer()


def _export_for_calibration(module: Any, example: Any) -> tuple[Any, int]:
    """torch.export with a dynamic batch dim so calibration runs 32 samples per call (observers on
    batch-1 graphs cost ~0.1-0.2 s a sample here); models that pin their batch fall back to batch 1.
    The final conversion re-exports with the batch-1 example, so the artifact's batch stays 1."""
    import torch

    ex2 = torch.cat([example] * 2) if example.shape[0] == 1 else example
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, (ex2,),
                                     dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},))
        return ep.module(), CALIB_BATCH
    except Exception:  # batch specialised somewhere in the model: calibrate at its own batch size
        return torch.export.export(module, (example,)).module(), int(example.shape[0])


def convert(req: QuantizeRequest, path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the .tflite for req.method to `path`; returns the manifest's calibration record."""
    import torch

    src = req.source
    shape = src.require_shape()
    example = src.example_input()
    calibration: dict[str, Any] = {}
    # litert-torch prints progress with rich to stdout, which belongs to `--json` output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(library_stream()):
        warnings.simplefilter("ignore")
        import litert_torch

        try:
            if req.method == "fp32":
                edge = litert_torch.convert(src.torch_module(), (example,))
            else:
                from litert_torch.quantize import pt2e_quantizer as pq
                from litert_torch.quantize.quant_config import QuantConfig
                from torchao.quantization.pt2e.quantize_pt2e import (
                    convert_pt2e,
                    prepare_pt2e,
                    prepare_qat_pt2e,
                )
                from torchao.quantization.pt2e.utils import _fuse_conv_bn_

                qat = req.method == "qat"
                # conv/linear + ReLU6 quantized as one op (TFLite fuses RELU6): host.quantize.pt2e_clamp
                quantizer = tflite_quantizer(req)
                graph, batch = _export_for_calibration(src.fresh_torch_module(), example)
                # Fold BatchNorm into the convs before annotating. prepare_pt2e does not fold the
                # aten.batch_norm nodes torch 2.13's export gives, so the observers sat between conv and BN:
                # EfficientNet-Lite0's int8 convs were calibrated on pre-BN ranges (agreement 0.53 on photos).
                # QAT: BN frozen into the conv weights (see _qat_quantizer).
                _fuse_conv_bn_(graph)
                prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(graph, quantizer)
                if qat:
                    from torchao.quantization.pt2e import (
                        move_exported_model_to_eval,
                        move_exported_model_to_train,
                    )

                    from host.quantize.qat import finetune

                    if batch < 2:
                        raise QuantizeError(f"tflite qat: {src.name} exports only with a fixed batch of {batch}; "
                                            "fine-tuning needs real mini-batches (BatchNorm)")
                    calibration = finetune(prepared, req, shape, say, move_to_train=move_exported_model_to_train)
                    calibration["library"] = "litert-torch PT2EQuantizer (is_qat) + torchao prepare_qat_pt2e"
                    move_exported_model_to_eval(prepared)
                elif req.method == "static":
                    x = calib_array(req.calib, req.calib_samples, shape)
                    say(f"tflite static (litert-torch PT2E): calibrating with {len(x)} samples ({req.calib_method})")
                    run_torch_calibration(prepared, x, batch, say)
                    observer = ("HistogramObserver" if req.calib_method == "entropy"
                                else OBSERVER_NAMES["torch"][req.calib_method])
                    calibration = {"method": req.calib_method, "samples": int(len(x)), "dataset": req.calib.name,
                                   "per_channel": req.per_channel, "observer": observer,
                                   "library": "litert-torch PT2EQuantizer (torchao PT2E)",
                                   **({"float_layers": list(req.extra["float_layers"])}
                                      if req.extra.get("float_layers") else {})}
                else:
                    with torch.no_grad():   # dynamic: weights only, one pass to record their ranges
                        prepared(example)
                    calibration = {"method": "none (dynamic: activation ranges computed at run time)",
                                   "per_channel": req.per_channel, "library": "litert-torch PT2EQuantizer"}
                quantized = convert_pt2e(prepared, fold_quantize=False)
                edge = litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(path))
        except QuantizeError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise QuantizeError(f"litert-torch could not convert {src.name} ({req.method}): "
                                f"{type(e).__name__}: {first[:300]}") from e
    return calibration
