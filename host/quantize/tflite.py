"""Platform `tflite`: `.tflite` flatbuffers for LiteRT (XNNPACK on CPU).

From Keras (.keras/.h5) or a SavedModel, with tf.lite.TFLiteConverter:
  fp32     plain conversion
  dynamic  dynamic-range: int8 weights, float activations (Optimize.DEFAULT, no data)
  fp16     float16 weights (Optimize.DEFAULT + supported_types float16)
  static   full integer with a representative dataset (--calib), int8 input/output unless --float-io
  qat      tfmot quantize_model on a tf_keras copy of the model, fine-tuned on --train for --epochs,
           then converted like static (int8 I/O unless --float-io)
From PyTorch (factory / .pt2) with litert-torch: fp32, dynamic, static, qat (host.quantize.tflite_from_torch).

TFLiteConverter calibrates activations with min/max only; it offers no percentile or entropy
calibration. A request for those is recorded (`calibration.requested`) and warned about; the artifact
is calibrated with min/max. Keras models take NHWC input: calibration/check data are transposed from
the datasets' NCHW and the manifest's preprocessing records layout NHWC.

Host check: a held-out slice runs through the artifact with the agent's LiteRT runner (host.quantize.host_run) and
is compared with the FP32 source; ops are counted by precision.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Optional

import numpy as np

from host.artifacts import Artifact
from host.models import TF_KINDS
from host.quantize import checks, tflite_inspect
from host.quantize.base import Converter, QuantizeError, QuantizeRequest
from host.quantize.calibration import batches, calib_array, fit_to_shape
from host.quantize.host_run import describe_line, run_artifact

TORCH_METHODS = ("fp32", "dynamic", "static", "qat")
PRECISION = {"fp32": "fp32", "dynamic": "dynamic-int8", "fp16": "fp16", "static": "int8", "qat": "int8"}
QAT_LR = 1e-5       # fine-tuning a trained model: small steps keep its decisions close to FP32
QAT_BATCH = 32
MINMAX_NOTE = "TFLiteConverter calibrates with min/max only; percentile and entropy are not offered"


class TFLiteConverter(Converter):
    platform = "tflite"
    format = "tflite"
    methods = ("fp32", "dynamic", "fp16", "static", "qat")

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        base = super().unsupported_reason(source, method)
        if base:
            return base
        kind = source.kind
        if kind in TF_KINDS:
            if method == "qat" and kind == "savedmodel":
                return ("tflite qat needs a Keras model (.keras/.h5): tfmot annotates Keras layers, "
                        "which a SavedModel does not keep")
            return None
        if kind == "onnx" and method in TORCH_METHODS:
            from host.models.onnx_torch import unsupported_reason

            return unsupported_reason(source, self.platform)
        if kind in ("torch", "exported", "onnx"):
            if method not in TORCH_METHODS:
                return (f"tflite {method} from {'an ONNX' if kind == 'onnx' else 'a PyTorch'} model is not offered by "
                        f"litert-torch (has: {', '.join(TORCH_METHODS)}); use a Keras source"
                        + (", or --platform tensorrt --method fp16" if method == "fp16" else ""))
            return None
        if kind == "torchscript":
            return ("litert-torch converts nn.Modules and ExportedPrograms, not TorchScript: pass a "
                    "package.module:function factory or a .pt2")
        from host.models import kind_phrase

        return f"{kind_phrase(kind)} cannot become TFLite here: use a Keras/SavedModel, PyTorch or ONNX source"

    def quantize(self, req: QuantizeRequest) -> Artifact:
        reason = self.unsupported_reason(req.source, req.method)
        if reason:
            raise QuantizeError(reason)
        say = req.progress or (lambda s: None)
        path = checks.artifact_path(req, self.platform, "tflite")
        extra_warnings: list[str] = []
        timer = checks.Timer()
        if req.source.kind in TF_KINDS:
            tfm = req.source.load()
            shape = keras_input_shape(req.source, tfm)
            with timer:
                calibration, engine = _convert_keras(req, tfm, shape, path, say, extra_warnings)
            versions = checks.tool_versions("tensorflow", "keras", "tf-keras", "tensorflow-model-optimization",
                                            "ai-edge-litert")
            layout = "NHWC" if len(shape) == 4 else None
        else:
            from host.quantize import tflite_from_torch

            shape = req.source.require_shape()
            with timer:
                calibration = tflite_from_torch.convert(req, path, say)
            engine = {"converter": "litert-torch", "io": "int8" if req.method == "static" else "float32"}
            if req.method == "static" and req.float_io:
                extra_warnings.append("--float-io is not offered by litert-torch: this static artifact has int8 I/O")
            versions = checks.tool_versions("torch", "torchao", "litert-torch", "ai-edge-litert")
            layout = None
        say(f"tflite {req.method}: wrote {path.name} ({path.stat().st_size / 1e6:.3f} MB); checking with LiteRT")
        chk = _host_check(req, path, shape, extra_warnings)
        inputs, outputs = tflite_inspect.io_infos(path)
        precision = PRECISION[req.method]
        if req.method in ("static", "qat") and checks.heavy_ops(chk["ops_by_precision"], checks.FLOAT_PRECISIONS):
            precision = "mixed"   # heavy ops left in float: not the int8 artifact that was asked for
        art = checks.finish_manifest(req, path, platform=self.platform, fmt=self.format, precision=precision,
                                     inputs=inputs, outputs=outputs, checks=chk, conversion_s=timer.seconds,
                                     versions=versions, engine=engine, calibration=calibration)
        if layout:   # the datasets are NCHW; Keras models were fed NHWC
            art.manifest.preprocessing["layout"] = layout
            art.write_manifest()
        return art


def keras_input_shape(source: Any, tfm: Any) -> tuple[int, ...]:
    """The concrete input shape (batch 1) of a Keras/SavedModel source; --input-shape fills dynamic dims."""
    if len(tfm.inputs) != 1:
        raise QuantizeError(f"{source.name} has {len(tfm.inputs)} inputs; tflite conversion here supports one")
    dims = list(tfm.input_shape)
    if any(d is None for d in dims[1:]):
        if not source.input_shape:
            raise QuantizeError(f"{source.name} has dynamic input dims {dims}: pass --input-shape, e.g. 1,224,224,3")
        return tuple(int(d) for d in source.input_shape)
    return (1, *[int(d) for d in dims[1:]])


# -- Keras / SavedModel -----------------------------------------------------------------------------

def _tf_converter(tfm: Any, model: Any = None) -> Any:
    import tensorflow as tf

    if model is not None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if tfm.kind == "savedmodel":
        return tf.lite.TFLiteConverter.from_saved_model(str(tfm.path))
    return tf.lite.TFLiteConverter.from_keras_model(tfm.model)


def _convert_keras(req: QuantizeRequest, tfm: Any, shape: tuple[int, ...], path: Any,
                   say: Callable[[str], None], extra_warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the .tflite; returns (calibration record, engine record)."""
    import tensorflow as tf

    from host.models.keras_source import quiet_stdout

    method = req.method
    calibration: dict[str, Any] = {}
    qat_model = None
    if method == "qat":
        qat_model, calibration = _qat_model(req, tfm, shape, say)
    conv = _tf_converter(tfm, qat_model)
    engine: dict[str, Any] = {"converter": "tf.lite.TFLiteConverter", "io": "float32",
                              "optimizations": [] if method == "fp32" else ["DEFAULT"]}
    if method != "fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if method == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    if method in ("static", "qat"):
        if method == "static":
            x = calib_array(req.calib, req.calib_samples, shape)
            conv.representative_dataset = _representative(x, say)
            calibration = {"method": "minmax", "requested": req.calib_method, "samples": int(len(x)),
                           "dataset": req.calib.name, "per_channel": req.per_channel,
                           "library": "tf.lite.TFLiteConverter", "note": MINMAX_NOTE}
            if req.calib_method != "minmax":
                extra_warnings.append(f"--calib-method {req.calib_method} is not offered by TFLiteConverter; "
                                      "calibrated with min/max")
        else:
            # The QAT model carries its learned ranges; TFLiteConverter still insists on a
            # representative dataset for full-integer conversion, so it gets a slice of the data.
            ds = req.calib if req.calib is not None else req.train
            x = fit_to_shape(ds.x[:min(req.calib_samples, 100)], shape)
            conv.representative_dataset = _representative(x, say, "representative data (qat)")
            calibration["representative_samples"] = int(len(x))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not req.per_channel:
            conv._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only per-tensor switch
        if not req.float_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
            engine["io"] = "int8"
        # tfmot's QAT scheme quantizes conv weights per channel but Dense weights per tensor
        engine["per_channel"] = ("conv weights only (tfmot QAT: Dense per-tensor)" if method == "qat" and req.per_channel
                                 else req.per_channel)
    say(f"tflite {method}: converting {req.source.name} with TFLiteConverter")
    try:
        with quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = conv.convert()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise QuantizeError(f"TFLiteConverter could not convert {req.source.name} ({method}): "
                            f"{type(e).__name__}: {first[:300]}") from e
    path.write_bytes(blob)
    return calibration, engine


def _representative(x: np.ndarray, say: Callable[[str], None],
                    label: str = "calibrating (min/max)") -> Callable[[], Any]:
    def gen() -> Any:
        for b in batches(x, 1, say, label):
            yield [np.ascontiguousarray(b, np.float32)]
    return gen


def _qat_model(req: QuantizeRequest, tfm: Any, shape: tuple[int, ...],
               say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """tfmot QAT: tf_keras copy of the model, quantize_model, fine-tune; returns (model, record)."""
    from host.models.keras_source import KerasSourceError, to_tf_keras

    if req.epochs < 1:
        raise QuantizeError("--epochs must be at least 1 for qat")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as e:
        raise QuantizeError(f"tflite qat needs tensorflow-model-optimization and tf-keras ({e})") from e
    try:
        base = to_tf_keras(tfm.model)
    except KerasSourceError as e:
        raise QuantizeError(f"tflite qat: {e}") from e
    # Freeze BatchNorm: fine-tuning from trained weights with batch statistics on small batches
    # moves the model away from the FP32 source more than quantization does.
    for layer in base.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
    try:
        qmodel = tfmot.quantization.keras.quantize_model(base)
    except (ValueError, RuntimeError, TypeError) as e:
        raise QuantizeError(f"tfmot cannot quantize {req.source.name}: {str(e).strip().splitlines()[0]}") from e
    if req.train_fn:
        from host.models.torch_source import import_callable

        fn = import_callable(req.train_fn, "train function")
        say(f"tflite qat: calling {req.train_fn} for {req.epochs} epoch(s)")
        try:
            fn(qmodel, req.train, req.epochs)
        except Exception as e:
            raise QuantizeError(f"train function {req.train_fn} raised {type(e).__name__}: {e}") from e
        return qmodel, {"method": "qat", "train_fn": req.train_fn, "epochs": req.epochs,
                        "dataset": getattr(req.train, "name", None), "library": "tensorflow-model-optimization"}
    ds = req.train
    if ds is None or ds.y is None:
        raise QuantizeError("qat needs labelled training data (--train fashion-mnist, an image folder, an .npz "
                            "with x and y) or --train-fn package.module:train")
    x, y = fit_to_shape(ds.x, shape), np.asarray(ds.y).astype(np.int64)
    init_qat_ranges(qmodel, base, x[:256])
    lr = float(req.extra.get("lr", QAT_LR))
    history = _fit(qmodel, base, x, y, req.epochs, lr, say)
    return qmodel, {"method": "qat", "dataset": ds.name, "samples": int(len(x)), "epochs": req.epochs,
                    "optimizer": f"Adam(lr={lr})", "batch_size": QAT_BATCH, "history": history,
                    "library": "tensorflow-model-optimization quantize_model (tf_keras)"}


def init_qat_ranges(qmodel: Any, base: Any, x: np.ndarray) -> None:
    """Start tfmot's activation ranges at the FP32 model's observed min/max.

    tfmot initialises every activation range to [-6, 6] and moves it by an EMA with decay 0.999, so a
    short fine-tune leaves logits beyond +-6 clipped. Seeding the ranges from the float model's layer
    outputs on data makes the first QAT step start where post-training calibration would."""
    import tf_keras

    layers = [lyr for lyr in base.layers if not isinstance(lyr, tf_keras.layers.InputLayer)]
    probe = tf_keras.Model(base.inputs, [lyr.output for lyr in layers])
    outs = probe.predict(x, batch_size=64, verbose=0)
    ranges = {lyr.name: (min(0.0, float(np.min(o))), max(0.0, float(np.max(o)))) for lyr, o in zip(layers, outs)}
    ranges["__input__"] = (min(0.0, float(x.min())), max(0.0, float(x.max())))
    for qlayer in qmodel.layers:
        inner = getattr(qlayer, "layer", None)
        key = "__input__" if type(qlayer).__name__ == "QuantizeLayer" else getattr(inner, "name", None)
        if key not in ranges:
            continue
        lo, hi = ranges[key]
        for w in qlayer.weights:
            leaf = w.name.split("/")[-1].split(":")[0]
            if leaf.endswith(("output_min", "post_activation_min", "quantize_layer_min")):
                w.assign(lo)
            elif leaf.endswith(("output_max", "post_activation_max", "quantize_layer_max")):
                w.assign(hi)


def _fit(qmodel: Any, base: Any, x: np.ndarray, y: np.ndarray, epochs: int, lr: float,
         say: Callable[[str], None]) -> list[dict[str, Any]]:
    import tf_keras

    # Models may end in softmax or in logits; the loss must know which.
    probe = np.asarray(base(x[:32], training=False))
    from_logits = not (probe.min() >= 0 and probe.max() <= 1 and np.allclose(probe.sum(axis=-1), 1, atol=1e-3))

    class Progress(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
            logs = logs or {}
            say(f"qat epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f}, "
                f"train accuracy {logs.get('accuracy', float('nan')):.1%}")

    qmodel.compile(optimizer=tf_keras.optimizers.Adam(lr),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                   metrics=["accuracy"])
    tf_keras.utils.set_random_seed(0)   # same data order on every run: comparable artifacts
    say(f"tflite qat: fine-tuning on {len(x)} samples for {epochs} epoch(s)")
    hist = qmodel.fit(x, y, batch_size=QAT_BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[Progress()])
    return [{"epoch": i + 1, "loss": round(float(hist.history["loss"][i]), 5),
             "accuracy": round(float(hist.history["accuracy"][i]), 4)} for i in range(epochs)]


# -- host-side check --------------------------------------------------------------------------------

def _host_check(req: QuantizeRequest, path: Any, shape: tuple[int, ...], extra_warnings: list[str]) -> dict[str, Any]:
    x, data_name = checks.check_inputs(req, shape)
    (out,), desc = run_artifact(path, "tflite", x, runtime="litert")
    src = req.source
    if src.kind in TF_KINDS:
        ref = src.load().predict(x)
    else:
        # ExportedPrograms are specialised to their example batch (torch 2.13 raises AssertionError,
        # not the RuntimeError checks.source_reference falls back on): feed them one sample at a time.
        ref = checks.source_reference(src, x, batch_size=1 if src.kind in ("exported", "onnx") else 50)
    agreement = checks.compare_outputs(ref, out, src.task)
    agreement["data"] = data_name
    y = _labels_for(req, data_name, len(x))
    if y is not None and src.task == "classification" and out.ndim == 2:
        # QAT fine-tunes the model, so agreement with FP32 alone undersells it: record accuracy too.
        agreement["accuracy"] = float((out.argmax(1) == y).mean())
        agreement["accuracy_fp32"] = float((ref.argmax(1) == y).mean())
    ops = tflite_inspect.ops_by_precision(path)
    chk = checks.finish_checks(agreement, ops, req.method, extra_warnings)
    chk["runtime"] = describe_line(desc)
    return chk


def _labels_for(req: QuantizeRequest, data_name: str, n: int) -> Optional[np.ndarray]:
    """Labels of the check slice that checks.check_inputs picked (by its recorded name), if any."""
    if req.check is not None and data_name == req.check.name:
        return None if req.check.y is None else np.asarray(req.check.y[:n])
    m = re.search(r"\[(\d+):(\d+)\]$", data_name)
    for ds in (req.calib, req.train):
        if m and ds is not None and ds.y is not None and data_name.startswith(ds.name + "["):
            start = int(m.group(1))
            y = np.asarray(ds.y[start:start + n])
            return y if len(y) == n else None
    return None
