"""Conv/Linear (+BatchNorm) + ReLU6 as one quantized op for torch.ao FX graph mode (platform `pytorch`).

FX's backend configs fuse conv + ReLU but treat ReLU6/hardtanh as an op that *shares* its input's observer, so
the conv's int8 output is quantized with the pre-clamp range: EfficientNet-Lite0's stem spans [-82, 66] before
the clamp keeps [0, 6], about 10 int8 levels (5 with x86's 7-bit activations). Plain FX static int8 of that
network agreed with FP32 on 31 % of the photos. The same fix as host.quantize.pt2e_clamp for PT2E: quantize the
clamp's *output*. Here through FX's own fusion mechanism: extra BackendPatternConfigs that fuse
conv(+bn)+ReLU6 into the ConvReLU module torch.ao already lowers to `quantized::conv2d_relu`, with the ReLU6
kept inside for the float forward, so the observer after the fused module sees [0, 6]. The quantized kernel
applies ReLU and requantizes to that [0, 6] scale, which saturates at 6: ReLU6, exactly, in one int8 op (what
XNNPACK and TFLite do with their fused min/max clamp).

Only clamps to [0, max] fuse this way (ReLU6, F.relu6); other hardtanh bounds keep FX's default handling.
Post-training only: the QAT fused modules apply F.relu themselves, whatever module they hold.
"""

from __future__ import annotations

from typing import Any


def _fuser(fused_type: Any) -> Any:
    def fuse(is_qat: bool, op: Any, *rest: Any) -> Any:
        import torch
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        *bn, act = rest
        if bn:
            op = fuse_conv_bn_eval(op, bn[0])
        fused = fused_type(op, nn.ReLU())   # the fused type insists on a ReLU at construction ...
        fused[1] = act if isinstance(act, torch.nn.Module) else nn.ReLU6()   # ... the float forward clamps at 6
        return fused

    return fuse


def backend_config() -> Any:
    """torch.ao's native backend config (what prepare_fx uses by default) plus conv(+bn)/linear + ReLU6 fusion."""
    import torch.ao.nn.intrinsic as nni
    import torch.ao.quantization.quantize_fx  # noqa: F401  (backend_config needs its utils imported first)
    import torch.nn.functional as F
    from torch import nn
    from torch.ao.quantization.backend_config import BackendPatternConfig, get_native_backend_config

    config = get_native_backend_config()
    dtypes = {c.pattern: c.dtype_configs for c in config.configs if isinstance(c.pattern, tuple)}
    families = [(nn.Conv1d, nn.BatchNorm1d, nni.ConvReLU1d), (nn.Conv2d, nn.BatchNorm2d, nni.ConvReLU2d),
                (nn.Conv3d, nn.BatchNorm3d, nni.ConvReLU3d), (nn.Linear, None, nni.LinearReLU)]
    for op, bn, fused in families:
        dt = dtypes[(op, nn.ReLU)]
        for act in (nn.ReLU6, F.relu6):
            patterns = [(op, act)] + ([(op, bn, act)] if bn is not None else [])
            for pattern in patterns:
                config.set_backend_pattern_config(
                    BackendPatternConfig(pattern).set_dtype_configs(dt).set_fuser_method(_fuser(fused))
                    .set_fused_module(fused))
    return config


def keep_float(mapping: Any, model: Any, float_layers: list[str]) -> Any:
    """Keep the modules in float_layers float with FX's own opt-out, QConfigMapping.set_module_name(name, None);
    plus the ops that only carry a float layer's output to the model's output (flatten, reshape, ...). FX
    otherwise quantizes those with their own observers, which then hold the float layer's range: a float
    classifier head followed by torch.flatten still handed out int8 logits (an outlier-channel head: top-1
    agreement 0.0 with the head "float"). Such call_functions are opted out by (module, function, call index),
    FX's set_module_name_object_type_order; call_modules by name. Method calls (x.view) cannot be singled out
    in FX's mapping and stay as they are."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.ao.quantization.fx.tracer import QuantizationTracer

    HEAVY_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                     nn.Linear, nn.LSTM, nn.GRU, nn.MultiheadAttention)
    HEAVY_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, F.linear, torch.matmul, torch.bmm, torch.mm)

    for name in float_layers:
        mapping.set_module_name(name, None)
    if not float_layers:
        return mapping
    tracer = QuantizationTracer([], [])
    graph = tracer.trace(model)
    index: dict[Any, int] = {}
    call_index: dict[str, int] = {}
    for n in graph.nodes:   # the order FX counts a function's calls per module when it applies the mapping
        if n.op == "call_function":
            key = (tracer.node_name_to_scope[n.name][0], n.target)
            call_index[n.name] = index.get(key, 0)
            index[key] = call_index[n.name] + 1

    def heavy(n: Any) -> bool:
        if n.op == "call_module":
            return isinstance(model.get_submodule(str(n.target)), HEAVY_MODULES)
        return n.op == "call_function" and n.target in HEAVY_FUNCTIONS

    def inside(n: Any) -> bool:
        return n.op == "call_module" and any(str(n.target) == f or str(n.target).startswith(f + ".")
                                             for f in float_layers)

    for start in [n for n in graph.nodes if inside(n)]:
        chain, cur = [], start
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "output":
                for c in chain:
                    if c.op == "call_function":
                        mapping.set_module_name_object_type_order(tracer.node_name_to_scope[c.name][0], c.target,
                                                                  call_index[c.name], None)
                    elif c.op == "call_module":
                        mapping.set_module_name(str(c.target), None)
                break
            if nxt.op not in ("call_function", "call_module", "call_method") or inside(nxt) or heavy(nxt):
                break   # another layer: it re-quantizes its input on purpose
            chain.append(nxt)
            cur = nxt
    return mapping
