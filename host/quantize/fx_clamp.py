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
