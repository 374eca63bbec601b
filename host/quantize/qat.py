"""Quantization-aware fine-tuning shared by the PyTorch platforms (FX and PT2E prepared models).

Either the user's own function (`--train-fn package.module:train`, called as
`train(model, dataset, epochs)` and expected to fine-tune `model` in place; `dataset` is the
--train Dataset or None), or the built-in loop: Adam, cross-entropy on labelled --train data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from host.quantize.base import QuantizeError, QuantizeRequest
from host.quantize.calibration import fit_to_shape

LR = 1e-4          # fine-tuning an already trained model: small steps keep its accuracy
BATCH = 32


def finetune(model: Any, req: QuantizeRequest, shape: tuple[int, ...], say: Callable[[str], None],
             batch_size: int = BATCH, move_to_train: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Fine-tune a QAT-prepared model; returns the manifest's calibration record."""
    if req.epochs < 1:
        raise QuantizeError("--epochs must be at least 1 for qat")
    if req.train_fn:
        from host.models.torch_source import import_callable

        fn = import_callable(req.train_fn, "train function")
        say(f"qat: calling {req.train_fn} for {req.epochs} epoch(s)")
        try:
            fn(model, req.train, req.epochs)
        except QuantizeError:
            raise
        except Exception as e:
            raise QuantizeError(f"train function {req.train_fn} raised {type(e).__name__}: {e}") from e
        return {"method": "qat", "train_fn": req.train_fn, "epochs": req.epochs,
                "dataset": getattr(req.train, "name", None)}
    ds = req.train
    if ds is None or ds.y is None:
        raise QuantizeError("qat needs labelled training data (--train fashion-mnist, an image folder, "
                            "an .npz with x and y) or --train-fn package.module:train")
    return builtin_loop(model, fit_to_shape(ds.x, shape), np.asarray(ds.y), req.epochs, say, batch_size,
                        move_to_train, ds.name)


def builtin_loop(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, say: Callable[[str], None],
                 batch_size: int = BATCH, move_to_train: Callable[[Any], None] | None = None,
                 name: str = "") -> dict[str, Any]:
    import torch

    (move_to_train or (lambda m: m.train()))(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(0)
    n = len(xt)
    steps = max(1, n // batch_size)   # drop the ragged tail: exported graphs may fix the batch size
    history = []
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        loss_sum, correct, seen, scored = 0.0, 0, 0, 0
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            opt.zero_grad()
            out = model(xt[idx])
            loss = torch.nn.functional.cross_entropy(out, yt[idx])
            loss.backward()
            opt.step()
            loss_sum += float(loss) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
            scored += yt[idx].numel()  # per image for a classifier, per pixel for a segmenter
            seen += len(idx)
            if (s + 1) % max(1, steps // 4) == 0 and s + 1 < steps:
                say(f"qat epoch {ep + 1}/{epochs}: {seen}/{n} samples, loss {loss_sum / seen:.4f}")
        history.append({"epoch": ep + 1, "loss": round(loss_sum / seen, 5), "accuracy": round(correct / scored, 4)})
        say(f"qat epoch {ep + 1}/{epochs}: loss {loss_sum / seen:.4f}, train accuracy {correct / scored:.1%}")
    return {"method": "qat", "dataset": name, "samples": int(steps * batch_size), "epochs": epochs,
            "optimizer": f"Adam(lr={LR})", "batch_size": batch_size, "history": history}
