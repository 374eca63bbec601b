"""Calibration data and calibration methods shared by every platform.

Data: a Dataset (host.data.datasets) is cut to `--calib-samples`, fitted to the model's input shape
(layout NCHW/NHWC, flattening for MLPs) and served in batches with progress lines.

Methods: `--calib-method minmax|percentile|entropy` maps to each library's own observer/calibrator:

| method     | torch.ao (FX)                 | PT2E (torchao, XNNPACK)       | onnxruntime              |
|------------|-------------------------------|-------------------------------|--------------------------|
| minmax     | MinMaxObserver                | MinMaxObserver                | CalibrationMethod.MinMax |
| percentile | PercentileObserver (99.99 %)  | PercentileObserver (99.99 %)  | CalibrationMethod.Percentile (99.99) |
| entropy    | HistogramObserver (L2 search) | HistogramObserver (L2 search) | CalibrationMethod.Entropy (KL) |

torch has no KL-divergence observer; its HistogramObserver searches the range that minimises the
quantization error over a histogram, which is the closest equivalent (recorded in the manifest).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

from host.quantize.base import CALIB_METHODS, QuantizeError

PERCENTILE = 99.99
_MAX_QUANTILE_ELEMS = 1 << 20   # torch.quantile refuses huge inputs; a strided subsample is plenty

# What each method means per library, recorded in manifest.calibration["observer"].
OBSERVER_NAMES = {
    "torch": {"minmax": "MinMaxObserver", "percentile": f"PercentileObserver({PERCENTILE})",
              "entropy": "HistogramObserver"},
    "onnxruntime": {"minmax": "MinMax", "percentile": f"Percentile({PERCENTILE})", "entropy": "Entropy"},
}


def check_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise QuantizeError(f"unknown --calib-method {method!r} (use one of {', '.join(CALIB_METHODS)})")
    return method


# -- data ------------------------------------------------------------------------------------------

def fit_to_shape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Samples (N, ...) -> (N, *shape[1:]): same layout, NCHW<->NHWC, or a reshape when only the
    number of elements matches (an MLP on flattened images). Anything else is a one-line error."""
    want = tuple(shape[1:])
    x = np.asarray(x)
    if x.dtype.kind not in "iu":   # integer samples are token ids or indices: never turn them into floats
        x = x.astype(np.float32, copy=False)
    if tuple(x.shape[1:]) == want:
        return x
    if x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[2], want[0], want[1]):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim == 4 and len(want) == 3 and tuple(x.shape[1:]) == (want[1], want[2], want[0]):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if int(np.prod(x.shape[1:])) == int(np.prod(want)):
        return x.reshape((len(x), *want))
    raise QuantizeError(f"data samples of shape {tuple(x.shape[1:])} do not fit the model input {tuple(shape)}; "
                        "pass matching data or --input-shape")


RANDOM_ID_RANGE = (1, 1000)   # random token ids: valid in any vocabulary of 1000+ entries, never padding (0)


def random_inputs(shape: tuple[int, ...], n: int, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Standard-normal samples (ids in RANDOM_ID_RANGE for integer inputs) for models without matching
    data (used for checks, never silently for calibration)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(*RANDOM_ID_RANGE, size=(n, *shape[1:])).astype(dtype)
    return rng.standard_normal((n, *shape[1:])).astype(np.float32)


def calib_array(ds: Any, samples: int, shape: tuple[int, ...]) -> np.ndarray:
    """The first `samples` items of a Dataset, fitted to the model input."""
    if ds is None:
        raise QuantizeError("static/qat quantization needs calibration data: pass --calib DATA "
                            "(fashion-mnist, digits, an image folder or a .npy/.npz file)")
    if samples <= 0:
        raise QuantizeError("--calib-samples must be positive")
    return fit_to_shape(ds.x[:samples], shape)


def batches(x: np.ndarray, batch_size: int, progress: Optional[Callable[[str], None]] = None,
            label: str = "calibrating") -> Iterator[np.ndarray]:
    """Yield batches; a progress line about every quarter."""
    n = len(x)
    step = max(1, batch_size)
    every = max(step, -(-n // 4 // step) * step)
    for i in range(0, n, step):
        yield x[i:i + step]
        done = min(n, i + step)
        if progress and (done % every == 0 or done == n):
            progress(f"{label}: {done}/{n} samples")


def run_torch_calibration(model: Any, x: np.ndarray, batch_size: int,
                          progress: Optional[Callable[[str], None]] = None) -> None:
    """Feed calibration data through an observed torch model (FX-prepared or PT2E-prepared)."""
    import torch

    with torch.no_grad():
        for b in batches(x, batch_size, progress):
            model(torch.from_numpy(np.ascontiguousarray(b)))


# -- torch observers -------------------------------------------------------------------------------

def _percentile_observer_class(base: type) -> type:
    """A MinMax-style observer whose range is the 0.01/99.99 percentile of every value it saw
    (robust to outliers, like onnxruntime's and TensorRT's percentile calibration). It keeps a
    strided subsample of the activations (at most _MAX_QUANTILE_ELEMS values) and computes the
    percentiles when the quantization parameters are asked for."""

    class PercentileObserver(base):  # type: ignore[misc, valid-type]
        percentile = PERCENTILE

        def forward(self, x_orig):  # noqa: ANN001 - torch observer signature
            import torch

            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().to(self.min_val.dtype).flatten()
            per_batch = _MAX_QUANTILE_ELEMS // 16
            if x.numel() > per_batch:
                x = x[:: x.numel() // per_batch + 1]
            kept = getattr(self, "_kept", None)
            kept = x.clone() if kept is None else torch.cat([kept, x])
            if kept.numel() > _MAX_QUANTILE_ELEMS:
                kept = kept[::2]
            self._kept = kept
            self._fresh = False
            return x_orig

        def calculate_qparams(self):  # noqa: ANN201 - torch observer signature
            if getattr(self, "_kept", None) is not None and not getattr(self, "_fresh", False):
                self._refresh()   # percentiles once, when convert asks, not after every batch
                self._fresh = True
            return super().calculate_qparams()

        def _refresh(self) -> None:
            import torch

            q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0], dtype=self._kept.dtype)
            lo, hi = torch.quantile(self._kept, q)
            self.min_val.resize_(lo.shape).copy_(lo)
            self.max_val.resize_(hi.shape).copy_(hi)

    return PercentileObserver


_PERCENTILE_CLASSES: dict[str, type] = {}


def torch_act_observer(method: str, lib: str = "torch.ao", **kwargs: Any) -> Any:
    """Activation observer constructor for --calib-method; lib is "torch.ao" (FX) or "pt2e" (torchao)."""
    check_method(method)
    if lib == "pt2e":
        from torchao.quantization.pt2e import observer as obs
    else:
        from torch.ao.quantization import observer as obs
    if method == "minmax":
        cls = obs.MinMaxObserver
    elif method == "entropy":
        cls = obs.HistogramObserver
    else:
        cls = _PERCENTILE_CLASSES.get(lib)
        if cls is None:
            cls = _PERCENTILE_CLASSES[lib] = _percentile_observer_class(obs.MinMaxObserver)
    return cls.with_args(**kwargs)


def host_has_vnni() -> bool:
    """Whether this CPU multiplies int8 without int16 intermediates (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def fx_reduce_range(engine: str, asked: Any = None) -> bool:
    """7-bit activations for the x86/fbgemm engines. Their AVX2 kernels sum pairs of u8*s8 products in int16
    (VPMADDUBSW), which 8-bit activations can saturate; VNNI/AMX kernels accumulate in int32 and do not. The
    7th bit is costly: EfficientNet-Lite0 static int8 top-1 agreement on photos:check 0.46 with it, 0.71
    without (same host, VNNI); a ReLU6 test net's cosine 0.966 vs 0.99996. So auto (`asked` None) turns it on
    only where this host (which checks the artifact, and is the x86 target's usual stand-in) lacks VNNI."""
    if engine not in ("x86", "fbgemm"):
        return False
    return (not host_has_vnni()) if asked is None else bool(asked)


def torch_fx_qconfig_mapping(method: str, per_channel: bool, engine: str, qat: bool = False,
                             reduce_range: Any = None) -> Any:
    """QConfigMapping for FX prepare_fx/prepare_qat_fx: the engine's defaults, with the activation
    observer replaced by the one --calib-method asks for (post-training only; QAT learns ranges)."""
    import torch
    from torch.ao.quantization import QConfig, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    if qat:
        return get_default_qat_qconfig_mapping(engine)
    reduce_range = fx_reduce_range(engine, reduce_range)
    act = torch_act_observer(method, "torch.ao", dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                             reduce_range=reduce_range)
    if per_channel:
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    qconfig = QConfig(activation=act, weight=weight)
    mapping = get_default_qconfig_mapping(engine)
    return mapping.set_global(qconfig)


def xnnpack_quantization_config(method: str, per_channel: bool, qat: bool = False) -> Any:
    """XNNPACKQuantizer config (symmetric int8) with the activation observer chosen by --calib-method."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    cfg = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
    if qat or method == "entropy":   # XNNPACK's own default static observer is the histogram one
        return cfg
    act_spec = cfg.input_activation
    obs = torch_act_observer(method, "pt2e", eps=2 ** -12)
    new_act = dataclasses.replace(act_spec, observer_or_fake_quant_ctr=obs)
    return dataclasses.replace(cfg, input_activation=new_act, output_activation=new_act)


# -- onnxruntime -----------------------------------------------------------------------------------

def ort_calibration_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    check_method(method)
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def ort_extra_options(method: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True}
    if method == "percentile":
        opts["CalibPercentile"] = PERCENTILE
    return opts


def ort_data_reader(input_name: str, x: np.ndarray, progress: Optional[Callable[[str], None]] = None) -> Any:
    """onnxruntime CalibrationDataReader over an array, batch 1 (the exported graph's batch). It has a length
    and `set_range`, so quantize_static can feed it chunk by chunk (CalibStridedMinMax; host.quantize.calib_memory)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(x))

        def __len__(self) -> int:
            return len(x)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._start, self._end = start_index, min(end_index, len(x))
            self._i = start_index

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            if self._i >= self._end:
                return None
            b = x[self._i:self._i + 1]
            self._i += 1
            if progress and (self._i == len(x) or self._i % max(1, -(-len(x) // 4)) == 0):
                progress(f"calibrating: {self._i}/{len(x)} samples")
            return {input_name: np.ascontiguousarray(b)}

        def rewind(self) -> None:
            self._i = self._start

    return _Reader()
