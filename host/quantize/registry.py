"""Platform name -> Converter class, imported lazily so a missing heavy library only affects the
platform that needs it (and `host --help` stays fast)."""

from __future__ import annotations

import importlib
from typing import Any

from host.quantize.base import Converter, QuantizeError

# platform -> (module, class, the pip extra/package that provides its toolchain)
PLATFORMS: dict[str, tuple[str, str, str]] = {
    "pytorch": ("host.quantize.torch_mobile", "TorchMobileConverter", "torch"),
    "executorch": ("host.quantize.executorch", "ExecuTorchConverter", "executorch"),
    "tflite": ("host.quantize.tflite", "TFLiteConverter", "tensorflow-cpu / litert-torch"),
    "tensorrt": ("host.quantize.tensorrt", "TensorRTConverter", "onnx + onnxruntime"),
}


def platform_names() -> list[str]:
    return list(PLATFORMS)


def get_converter(platform: str) -> Converter:
    """An instance of the platform's converter; unknown or uninstalled platforms are one line."""
    if platform not in PLATFORMS:
        raise QuantizeError(f"unknown platform {platform!r} (use one of {', '.join(PLATFORMS)})")
    mod_name, cls_name, needs = PLATFORMS[platform]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            raise QuantizeError(f"platform {platform!r} is not available in this build") from e
        raise QuantizeError(f"platform {platform!r} needs {needs} (missing module {e.name!r}); "
                            "install the 'host' extra") from e
    return getattr(mod, cls_name)()


def check_pair(converter: Converter, source: Any, method: str) -> None:
    """Raise one line when (source, platform, method) cannot work, before any slow work starts."""
    reason = converter.unsupported_reason(source, method)
    if reason:
        raise QuantizeError(reason)
