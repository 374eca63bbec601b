"""A ready `.tflite` / `.onnx` from somewhere else is a first-class artifact: its manifest is made from the file
(inputs, outputs, quantization, precision; source "as given"), a folder of such files is accepted, and it is
deployed, evaluated and reported through a real local agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import host


def make_models(folder: Path) -> None:
    """A digits CNN trained briefly in Keras, converted by TFLiteConverter twice (float16 weights, plain fp32),
    and a torch-exported fp32 ONNX of the same input size: three files, no manifests. Runs in a child: tensorflow
    and torch do not share a process well."""
    code = f"""
import numpy as np, tensorflow as tf, torch
from sklearn.datasets import load_digits
d = load_digits()
x = (d.images / 16.0).astype(np.float32)[..., None]
tf.keras.utils.set_random_seed(0)
m = tf.keras.Sequential([tf.keras.Input((8, 8, 1), batch_size=1), tf.keras.layers.Conv2D(16, 3, activation="relu"),
                         tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
m.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
m.fit(x, d.target, epochs=8, batch_size=32, verbose=0)
c = tf.lite.TFLiteConverter.from_keras_model(m)
open("{folder}/digits_fp32.tflite", "wb").write(c.convert())
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.target_spec.supported_types = [tf.float16]
open("{folder}/digits_fp16.tflite", "wb").write(c.convert())
net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 10))
torch.onnx.export(net.eval(), (torch.randn(1, 1, 8, 8),), "{folder}/digits.onnx", input_names=["x"],
                  output_names=["y"], opset_version=17, dynamo=False)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]


def test_manifest_made_from_the_files(tmp_path):
    from host.artifacts import load_artifact
    from host.commands.common import expand_artifacts

    make_models(tmp_path)
    fp16, fp32 = load_artifact(tmp_path / "digits_fp16.tflite"), load_artifact(tmp_path / "digits_fp32.tflite")
    onnx = load_artifact(tmp_path / "digits.onnx")
    assert (fp16.manifest.precision, fp32.manifest.precision, onnx.manifest.precision) == ("fp16", "fp32", "fp32")
    assert fp16.manifest.source["kind"] == "as given" and fp16.manifest.platform == "tflite"
    assert fp16.manifest.inputs[0].shape == [1, 8, 8, 1] and fp16.manifest.inputs[0].dtype == "float32"
    assert fp16.manifest.outputs[0].shape == [1, 10]
    assert onnx.manifest.inputs[0].name == "x" and onnx.manifest.inputs[0].shape == [1, 1, 8, 8]
    assert fp16.manifest.size_bytes < 0.7 * fp32.manifest.size_bytes     # the weights really are float16
    assert sorted(a.path.name for a in expand_artifacts([str(tmp_path)])) == [
        "digits.onnx", "digits_fp16.tflite", "digits_fp32.tflite"]


def test_ready_tflite_deployed_evaluated_reported(env, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    make_models(folder)
    (folder / "digits.onnx").unlink()                  # the folder: two .tflite files, no manifests
    db = tmp_path / "r.sqlite"
    r = host(env, "deploy", "--target", "local", "--artifact", str(folder), "--data", "digits", "--data-limit", "300",
             "--repeats", "2", "--runs", "10", "--min-seconds", "0.05", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    recs = {x["artifact"]: x for x in json.loads(r.stdout)}
    assert set(recs) == {"digits_fp16.tflite", "digits_fp32.tflite"}
    fp16 = recs["digits_fp16.tflite"]
    assert fp16["precision"] == "fp16" and fp16["latency_ms"]["p50"] > 0
    top1 = {k: v["eval"]["metrics"]["top1"] for k, v in recs.items()}
    assert top1["digits_fp32.tflite"] > 0.8, top1                 # a trained model, scored on its labels
    assert abs(top1["digits_fp16.tflite"] - top1["digits_fp32.tflite"]) < 0.02, top1

    r = host(env, "eval", "--target", "local", "--artifact", str(folder / "digits_fp16.tflite"), "--data", "digits",
             "--limit", "100", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr[-3000:]

    r = host(env, "report", "--db", str(db), "--format", "json")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)["rows"]
    row = next(x for x in rows if x["artifact"] == "digits_fp16.tflite")
    assert row["precision"] == "fp16" and row["method"] == "fp16", row
    assert row["accuracy"] is not None and row["accuracy"] > 0.8, row     # the eval joined to the benchmark
