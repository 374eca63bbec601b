"""TensorFlow sources: Keras 3 `.keras`/`.h5` files and SavedModel directories.

`load_keras(path)` returns a `TFModel`: the loaded model, its input/output signature, and a
`predict` that gives the FP32 reference outputs every TFLite check compares against.

tfmot (Keras QAT) only accepts tf_keras (Keras 2) models, while TensorFlow 2.21 loads files as
Keras 3. `to_tf_keras(model)` rebuilds a Keras 3 model layer by layer in tf_keras, replaying its
graph and copying the weights, so QAT can start from the user's trained model.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from host.errors import UserError
from host.quiet import library_stream

# TensorFlow prints C++ INFO lines on import; keep the user's terminal for our progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class KerasSourceError(UserError):
    """A Keras/SavedModel source that cannot be loaded or translated: one line."""


@dataclass
class TensorSig:
    name: str
    shape: list[Optional[int]]          # None for a dynamic dimension (usually batch)
    dtype: str


@dataclass
class TFModel:
    kind: str                           # keras | savedmodel
    path: Path
    flavor: str                         # keras3 | tf_keras | savedmodel (what loaded it)
    model: Any = None                   # keras.Model / tf_keras.Model; None for a plain SavedModel
    signature: Any = None               # SavedModel serving function (savedmodel kind)
    inputs: list[TensorSig] = field(default_factory=list)
    outputs: list[TensorSig] = field(default_factory=list)

    @property
    def input_shape(self) -> list[Optional[int]]:
        return self.inputs[0].shape

    def predict(self, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """FP32 reference outputs for the first output, batch by batch."""
        outs = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if self.model is not None:
                y = self.model(xb, training=False)
            else:
                res = self.signature(**{self.inputs[0].name: xb})
                y = res[self.outputs[0].name]
            if isinstance(y, (list, tuple)):
                y = y[0]
            elif isinstance(y, dict):
                y = next(iter(y.values()))
            outs.append(np.asarray(y, np.float32))
        return np.concatenate(outs, axis=0)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Keras/TF export print to stdout ("Saved artifact at ..."); stdout belongs to --json output."""
    with contextlib.redirect_stdout(library_stream()):
        yield


def load_keras(path: str | Path) -> TFModel:
    """Load a `.keras`/`.h5` file (Keras 3, falling back to tf_keras) or a SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise KerasSourceError(f"model not found: {p}")
    try:
        import tensorflow as tf  # noqa: F401 - fail early with a clear line if TF is missing
    except ImportError as e:
        raise KerasSourceError(f"tensorflow is not installed ({e}); install the 'host' extra (tensorflow-cpu)") from e
    if p.is_dir():
        return _load_saved_model(p)
    return _load_keras_file(p)


def _load_keras_file(p: Path) -> TFModel:
    import keras

    errors = []
    try:
        model = keras.models.load_model(p, compile=False)
        flavor = "keras3"
    except Exception as e:  # corrupt file, Keras 2 file, custom objects: try tf_keras next
        errors.append(f"keras: {type(e).__name__}: {_first_line(e)}")
        model = None
    if model is None:
        try:
            import tf_keras

            model = tf_keras.models.load_model(p, compile=False)
            flavor = "tf_keras"
        except Exception as e:
            errors.append(f"tf_keras: {type(e).__name__}: {_first_line(e)}")
            raise KerasSourceError(f"cannot load Keras model {p} ({'; '.join(errors)})") from e
    ins = [_sig(t, f"input_{i}") for i, t in enumerate(model.inputs)]
    outs = [_sig(t, f"output_{i}") for i, t in enumerate(model.outputs)]
    return TFModel("keras", p, flavor, model=model, inputs=ins, outputs=outs)


def _load_saved_model(p: Path) -> TFModel:
    import tensorflow as tf

    if not ((p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists()):
        raise KerasSourceError(f"{p} is not a SavedModel directory (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(p))
    except Exception as e:
        raise KerasSourceError(f"cannot load SavedModel {p}: {type(e).__name__}: {_first_line(e)}") from e
    sigs = getattr(loaded, "signatures", {})
    if "serving_default" not in sigs:
        raise KerasSourceError(f"SavedModel {p} has no 'serving_default' signature; re-export it with one")
    fn = sigs["serving_default"]
    _, kw = fn.structured_input_signature
    if len(kw) != 1:
        raise KerasSourceError(f"SavedModel {p} has {len(kw)} inputs; only single-input models are supported")
    ins = [TensorSig(k, _dims(s.shape), s.dtype.name) for k, s in sorted(kw.items())]
    outs = [TensorSig(k, _dims(s.shape), s.dtype.name) for k, s in sorted(fn.structured_outputs.items())]
    # Keep `loaded` alive: the signature's variables belong to it.
    tfm = TFModel("savedmodel", p, "savedmodel", signature=fn, inputs=ins, outputs=outs)
    tfm._keepalive = loaded  # type: ignore[attr-defined]
    return tfm


def _sig(t: Any, fallback: str) -> TensorSig:
    name = getattr(t, "name", None) or fallback
    dtype = getattr(t, "dtype", "float32")
    return TensorSig(str(name).split(":")[0], _dims(t.shape), getattr(dtype, "name", str(dtype)))


def _dims(shape: Any) -> list[Optional[int]]:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return [None if d is None else int(d) for d in dims]


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""


# -- Keras 3 -> tf_keras, for tfmot ------------------------------------------------------------

# Base-layer keyword arguments tf_keras accepts on every layer besides the class's own.
_BASE_KWARGS = {"name", "trainable", "dtype"}


def to_tf_keras(model: Any) -> Any:
    """A tf_keras copy of a Keras 3 (or tf_keras) model with the same graph and weights.

    Layers are re-created by class name from their config (keys tf_keras does not know are dropped;
    initializers don't matter because the weights are copied). Raises KerasSourceError naming the
    first layer tf_keras has no counterpart for.
    """
    import tf_keras

    if isinstance(model, tf_keras.Model):
        clone = tf_keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    import keras

    cache: dict[int, Any] = {}

    def translate(layer: Any) -> Any:
        if id(layer) not in cache:
            cache[id(layer)] = _translate_layer(layer, tf_keras)
        return cache[id(layer)]

    if isinstance(model, keras.Sequential):
        inputs = [tf_keras.Input(shape=tuple(model.inputs[0].shape[1:]), name=_sig(model.inputs[0], "input").name)]
        h = inputs[0]
        for layer in model.layers:
            h = translate(layer)(h)
        outputs = h
    else:
        inputs = [tf_keras.Input(shape=tuple(t.shape[1:]), name=_sig(t, f"input_{i}").name)
                  for i, t in enumerate(model.inputs)]
        # Replay the Keras 3 graph with tf_keras layers; _run_through_graph walks nodes by depth
        # and maps each Keras 3 tensor to the tensor the translated layer returns.
        outputs = model._run_through_graph(inputs if len(inputs) > 1 else inputs[0], operation_fn=translate,
                                           call_fn=lambda op, *a, **k: op(*a, **k))
    out = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)
    for layer in _all_layers(model):
        if id(layer) in cache and layer.weights:
            try:
                cache[id(layer)].set_weights(layer.get_weights())
            except ValueError as e:
                raise KerasSourceError(f"cannot copy weights of layer {layer.name!r} to tf_keras: {e}") from e
    return out


def _all_layers(model: Any) -> list[Any]:
    return list(model.layers)


def _translate_layer(layer: Any, tf_keras: Any) -> Any:
    cls_name = type(layer).__name__
    cls = getattr(tf_keras.layers, cls_name, None)
    if cls is None:
        raise KerasSourceError(f"layer {layer.name!r} ({cls_name}) has no tf_keras counterpart; QAT needs "
                               "a model made of standard Keras layers")
    cfg = layer.get_config()
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KWARGS
    kwargs = {}
    for k, v in cfg.items():
        if k not in accepted or k.endswith(("_initializer", "_regularizer", "_constraint")):
            continue
        if k == "dtype" and isinstance(v, dict):       # Keras 3 DTypePolicy -> its name
            v = v.get("config", {}).get("name", "float32")
        if isinstance(v, dict) and "class_name" in v:  # other serialized objects: let tf_keras read them
            try:
                v = tf_keras.saving.deserialize_keras_object({"class_name": v["class_name"],
                                                              "config": v.get("config", {})})
            except Exception as e:
                raise KerasSourceError(f"layer {layer.name!r}: cannot translate {k}={v.get('class_name')} "
                                       f"to tf_keras ({_first_line(e)})") from e
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise KerasSourceError(f"layer {layer.name!r} ({cls_name}): tf_keras rejects its config ({_first_line(e)})") from e
