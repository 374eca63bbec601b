"""TensorRT QAT: fake-quant fine-tuning in PyTorch, exported as the explicit Q/DQ ONNX TensorRT builds from.

TensorRT's explicit quantization wants symmetric int8 (zero point 0) on activations and weights. No
maintained PyTorch quantizer targets that for ONNX (NVIDIA's pytorch-quantization / ModelOpt are not
installable here; torch.ao's reference-model export to ONNX fails on quantize_per_channel), so this module
uses torch.ao's FX QAT (prepare_qat_fx) with a symmetric qint8 QConfig — the native backend config is
widened to accept qint8 activations — fine-tunes with the shared loop (host.quantize.qat), then:
  1. folds each fused Conv+BN QAT module into a QAT Conv carrying the learned weight fake-quant (the
     folding TensorRT would do; it makes the conv weights constants), and
  2. exports with torch.onnx (FakeQuantize -> QuantizeLinear/DequantizeLinear pairs), then stores every
     quantized constant weight as an int8 initializer (Q folded by hand: no ONNX tool does it), so the
     artifact is int8-sized like the post-training Q/DQ one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host.quantize.base import QuantizeError, QuantizeRequest
from host.quantize.qat import finetune

QMIN, QMAX = -128, 127   # the ONNX exporter maps fake-quant to Q/DQ only for (-128, 127) or (0, 255)


def symmetric_qat_setup(per_channel: bool) -> tuple[Any, Any]:
    """(QConfigMapping, BackendConfig) for symmetric int8 fake-quant on activations and weights."""
    import torch
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )
    from torch.ao.quantization.backend_config import DTypeConfig, get_native_backend_config

    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=QMIN, quant_max=QMAX,
                                 dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    if per_channel:
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=QMIN,
                                        quant_max=QMAX, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                        ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=QMIN, quant_max=QMAX,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    backend = get_native_backend_config()
    # the x86/fbgemm patterns only list quint8 activations; without this every op would silently stay float
    symmetric = DTypeConfig(input_dtype=torch.qint8, output_dtype=torch.qint8, weight_dtype=torch.qint8,
                            bias_dtype=torch.float)
    for pattern in backend.configs:
        pattern.add_dtype_config(symmetric)
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight)), backend


def fold_conv_bn(model: Any) -> int:
    """Replace fused ConvBn(ReLU)2d QAT modules by QAT Conv(ReLU)2d with BN folded in; returns how many.

    In eval mode a ConvBn QAT module computes bn(conv(x, fq(w * s)) / s + b) with s = gamma / std, which
    equals conv(x, fq(w * s)) + (b - mean) * s + beta: the same fake-quantized weight, a folded bias."""
    import torch
    import torch.ao.nn.intrinsic.qat as nniqat
    import torch.ao.nn.qat as nnqat

    folded = 0
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, (nniqat.ConvBn2d, nniqat.ConvBnReLU2d)):
            continue
        bn = mod.bn
        with torch.no_grad():
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = mod.weight * s.reshape(-1, 1, 1, 1)
            b = mod.bias if mod.bias is not None else torch.zeros_like(bn.running_mean)
            bias = (b - bn.running_mean) * s + bn.bias
        cls = nniqat.ConvReLU2d if isinstance(mod, nniqat.ConvBnReLU2d) else nnqat.Conv2d
        new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                  dilation=mod.dilation, groups=mod.groups, bias=True, padding_mode=mod.padding_mode,
                  qconfig=mod.qconfig)
        with torch.no_grad():
            new.weight.copy_(w)
            new.bias.copy_(bias)
        new.weight_fake_quant = mod.weight_fake_quant   # the learned weight scales, observer now off
        model.set_submodule(name, new)
        folded += 1
    return folded


def int8_weight_initializers(model: Any) -> int:
    """QuantizeLinear on a constant weight -> an int8 initializer feeding its DequantizeLinear (same values,
    one quarter of the bytes); returns how many were folded."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:   # the exporter shares zero points through Identity nodes: see through them
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    keep, folded = [], 0
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in inits and all(i in inits for i in n.input[1:3]):
            w = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zp = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 else np.zeros((), np.int8)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1:   # per-channel: broadcast along the quantized axis
                shape = [1] * w.ndim
                shape[axis] = -1
                scale, zpb = scale.reshape(shape), zp.reshape(shape).astype(np.float32)
            else:
                zpb = zp.astype(np.float32)
            q = np.clip(np.round(w / scale) + zpb, QMIN, QMAX).astype(zp.dtype)   # ONNX rounds half to even, as np
            model.graph.initializer.append(numpy_helper.from_array(q, n.output[0]))
            if consumers.get(n.input[0], 0) == 1 and inits[n.input[0]] in model.graph.initializer:
                model.graph.initializer.remove(inits[n.input[0]])
            folded += 1
            continue
        keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return folded


def qat_to_qdq_onnx(req: QuantizeRequest, shape: tuple[int, ...], path: Path, export: Callable[..., str],
                    say: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    """Fine-tune with symmetric fake-quant and write the Q/DQ ONNX; (exporter, manifest calibration record)."""
    import onnx
    import torch
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    mapping, backend = symmetric_qat_setup(req.per_channel)
    example = req.source.example_input()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_qat_fx(req.source.fresh_torch_module().train(), mapping, (example,),
                                      backend_config=backend)
    except Exception as e:
        raise QuantizeError(f"tensorrt qat: FX graph mode cannot trace this model ({type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or [''])[0]}); use --method static") from e
    record = finetune(prepared, req, shape, say)
    prepared.eval()
    prepared.apply(torch.ao.quantization.disable_observer)
    folded_bn = fold_conv_bn(prepared)
    exporter = export(prepared, example, path, legacy_only=True)   # dynamo does not export fake-quant modules
    model = onnx.load(str(path))
    weights = int8_weight_initializers(model)
    onnx.save(model, str(path))
    say(f"tensorrt qat: exported Q/DQ ONNX ({folded_bn} conv+bn folded, {weights} int8 weight tensors)")
    record.update({"library": "torch.ao prepare_qat_fx (symmetric int8 fake-quant) -> torch.onnx Q/DQ",
                   "activations": "int8 symmetric (learned moving-average ranges)",
                   "weights": f"int8 symmetric {'per-channel' if req.per_channel else 'per-tensor'}",
                   "ignored_options": ["--calib-method"]})
    return exporter, record
