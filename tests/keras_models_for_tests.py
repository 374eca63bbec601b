"""A small Keras CNN for the TFLite tests, as a Keras 3 or a tf_keras (Keras 2) model.

`build_cnn(keras_module)` takes either `keras` or `tf_keras` (same layer API): conv-bn-relu x2 with
pooling, a Dense head big enough (~100k weights) that int8 shrinks the file >3x. `trained_cnn_file`
fits it for one seeded epoch on ~2k Fashion-MNIST samples (digits if the Debian package is missing)
and caches the `.keras` file, so agreement checks compare real decision margins.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

INPUT_HWC = (28, 28, 1)


def build_cnn(k: Any, classes: int = 10, softmax: bool = False) -> Any:
    """Sequential CNN on 28x28x1 NHWC input, named input "image"; logits unless softmax=True."""
    layers = k.layers
    return k.Sequential([
        k.Input(INPUT_HWC, name="image"),
        layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(64, activation="relu"),
        layers.Dense(classes, activation="softmax" if softmax else None),
    ], name="kcnn")


def build_residual(k: Any, classes: int = 10) -> Any:
    """Functional CNN with a residual Add (exercises graph replay in keras_source.to_tf_keras)."""
    layers = k.layers
    inp = k.Input(INPUT_HWC, name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    r = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(h))
    h = layers.ReLU()(layers.Add()([h, r]))
    out = layers.Dense(classes, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    return k.Model(inp, out, name="kres")


def training_data(samples: int = 2000) -> tuple[np.ndarray, np.ndarray, str]:
    """(NHWC float32 images, labels, dataset spec) from Fashion-MNIST, or digits resized to 28x28."""
    from host.data.datasets import DatasetError, load_dataset

    try:
        ds = load_dataset("fashion-mnist", limit=samples)
        return ds.to_layout("NHWC"), ds.y, "fashion-mnist"
    except DatasetError:
        ds = load_dataset("digits", limit=samples)
        x = np.kron(ds.x, np.ones((1, 1, 4, 4), np.float32))[:, :, 2:30, 2:30]   # 8x8 -> 32x32 -> 28x28
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), ds.y, "digits"


def fit(model: Any, k: Any, x: np.ndarray, y: np.ndarray, epochs: int = 1, seed: int = 0) -> Any:
    k.utils.set_random_seed(seed)
    softmax = model.layers[-1].get_config().get("activation") == "softmax"
    model.compile(k.optimizers.Adam(2e-3), k.losses.SparseCategoricalCrossentropy(from_logits=not softmax),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def _cache_dir() -> Path:
    d = Path(os.environ.get("EDGEBENCH_TEST_CACHE", Path(tempfile.gettempdir()) / "edgebench-test-models"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def trained_cnn_file(samples: int = 2000, flavor: str = "keras") -> Path:
    """A `.keras` (Keras 3) or `.h5` (tf_keras) file of the CNN trained for one epoch; cached on disk."""
    path = _cache_dir() / f"kcnn-{flavor}-{samples}.{'keras' if flavor == 'keras' else 'h5'}"
    if path.exists():
        return path
    if flavor == "keras":
        import keras as k
    else:
        import tf_keras as k
    k.utils.set_random_seed(0)
    x, y, _ = training_data(samples)
    model = fit(build_cnn(k), k, x, y)
    tmp = path.with_name(f"{os.getpid()}.{path.name}")
    model.save(tmp)
    tmp.replace(path)
    return path
