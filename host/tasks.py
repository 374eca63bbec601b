"""Per task: output decoding, scores against labels, agreement with FP32, and the one headline number.

Eval, the report and the zoo all ask here, so a task means the same everywhere. Tasks: classification
(logits), detection (the CenterNet-style raw map: class heatmaps + 4 box channels), segmentation
(per-pixel class logits), embedding (one vector per sample), dense (any per-pixel map without labels here: a
text detector's probability map; scored by per-pixel agreement and IoU against FP32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from host.data import metrics as M
from host.data.datasets import Dataset

TASKS = ("classification", "detection", "segmentation", "embedding", "dense")

# The one number a task is compared on. Labelled data: COCO's primary figure for detection (mAP@0.5
# saturates on the synthetic shapes, 99.99%, and hides drops), mIoU for segmentation. Embeddings have no
# labels here: their headline is agreement with FP32 (cosine), as for any model evaluated on unlabelled data.
HEADLINE = {"classification": "top1", "detection": "map50_95", "segmentation": "miou", "embedding": "cosine",
            "dense": "pixel_agreement"}
AGREEMENT_HEADLINE = {"classification": "top1_agreement", "detection": "top1_agreement",
                      "segmentation": "top1_agreement", "embedding": "cosine", "dense": "pixel_agreement"}


def shape_mismatch(task: str, shape: Any) -> str | None:
    """Why outputs of `shape` (N, ...) cannot be scored as `task`, or None. A classifier's scores are one
    vector per sample; classification metrics on a 1x1x640x640 map scored an int8 detector "top-1 83%"."""
    dims = [int(d) for d in list(shape)[1:]]
    if any(d <= 0 for d in dims):
        return None       # dynamic: decided once the device's outputs are back
    if task == "classification" and len(dims) >= 2 and int(np.prod(dims[1:])) > 1:
        return (f"outputs of shape {[1, *dims]} are a dense map, not class scores: classification metrics do not "
                "apply (pass --task dense, or segmentation with mask labels)")
    if task in ("segmentation", "dense") and len(dims) < 3:
        return f"outputs of shape {[1, *dims]} are not a per-pixel map: {task} metrics do not apply"
    return None


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return task


def postprocess(task: str, outputs: np.ndarray) -> Any:
    """Raw outputs for a batch -> predictions: class ids (classification), a list of {boxes, scores, labels}
    per image (detection, decoded + NMS on the host), class maps (segmentation), the vectors (embedding)."""
    outputs = np.asarray(outputs)
    if task == "classification":
        return np.argmax(outputs.reshape(len(outputs), -1), axis=1)
    if task == "detection":
        from host.zoo.decode import decode_batch

        return decode_batch(outputs, num_classes=outputs.shape[1] - 4)
    if task == "segmentation":
        return np.argmax(outputs, axis=1)
    if task in ("embedding", "dense"):
        return outputs
    raise ValueError(f"unknown task {task!r}")


def has_labels(task: str, ds: Dataset) -> bool:
    if task == "detection":
        return "boxes" in ds.meta
    if task == "segmentation":
        return "masks" in ds.meta or ds.y is not None
    if task in ("embedding", "dense"):
        return False   # no labelled embedding / generic dense data here: agreement with FP32 is the score
    return ds.y is not None


def task_metrics(task: str, outputs: np.ndarray, ds: Dataset) -> dict[str, Any]:
    """Score raw outputs (N, ...) against the dataset's labels with the task's metric; {} for unlabelled
    data (then agreement with FP32 is what there is to say)."""
    outputs = np.asarray(outputs, np.float32)
    if not has_labels(check_task(task), ds):
        return {}
    if task == "classification":
        return M.classification_metrics(outputs.reshape(len(outputs), -1), ds.y)
    if task == "detection":
        preds = postprocess(task, outputs)
        gts = [{"boxes": b, "labels": lab} for b, lab in zip(ds.meta["boxes"], ds.meta["labels"])]
        return M.detection_metrics(preds, gts, num_classes=outputs.shape[1] - 4)
    target = ds.meta["masks"] if "masks" in ds.meta else ds.y
    return M.segmentation_metrics(postprocess(task, outputs), target, outputs.shape[1])


def agreement_metrics(task: str, y: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Agreement of a converted model's outputs with its FP32 source's on the same inputs: top-1/top-5
    agreement and cosine (classification), per-cell class agreement on the heatmap channels only (the
    detector's last 4 channels are box regressions), per-pixel agreement (segmentation), cosine and
    nearest-neighbour agreement (embedding)."""
    check_task(task)
    if task == "embedding":
        return M.embedding_agreement(y, ref)
    if task == "dense" or (task == "segmentation" and y.ndim == 4 and y.shape[1] == 1):
        return M.dense_agreement(y, ref)
    a = M.agreement(y, ref)
    if task == "classification" and y.reshape(len(y), -1).shape[1] > 1:
        a.update(M.classifier_agreement(y, ref))
    if task == "detection" and y.ndim == 4 and y.shape[1] > 4:
        a["top1_agreement"] = M.agreement(y[:, :-4], ref[:, :-4])["top1_agreement"]
    return a


def headline(task: str, metrics: dict[str, Any], agreement: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(name, value) of the number a row is compared on: the labelled metric where there is one, else the
    agreement with FP32 (value None when neither was measured)."""
    name = HEADLINE.get(task, "top1")
    v = (metrics or {}).get(name)
    if v is None and agreement:
        name = AGREEMENT_HEADLINE.get(task, "top1_agreement")
        v = agreement.get(name)
    return name, v
