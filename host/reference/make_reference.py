"""Rebuild the reference workloads `host noise` runs (committed next to this file; run this only to
change them): the same small CNN-like compute as a .tflite (LiteRT / tflite-runtime devices) and an
.onnx (ONNX Runtime devices). Fixed seeds, so a rebuild gives the same graph.

    .venv/bin/python -m host.reference.make_reference
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_tflite(path: Path) -> None:
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([
        tf.keras.Input((32, 32, 3)),
        tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10)])
    m(np.zeros((1, 32, 32, 3), "float32"))
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())


def make_onnx(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((128, 128)).astype("float32") / 16, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 10)).astype("float32") / 16, "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "noise_reference", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 10])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgebench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


if __name__ == "__main__":
    make_tflite(HERE / "noise_reference.tflite")
    make_onnx(HERE / "noise_reference.onnx")
    print("written:", *sorted(p.name for p in HERE.glob("noise_reference.*")))
