"""Train, score and cache the reference models.

One short recipe for all three (AdamW + one-cycle schedule, 2 threads) with a task-specific loss;
the cache holds `<name>.pt` (state dict) and `<name>.json` (recipe, metrics, time), written
atomically under a file lock so two processes asking at once train only once.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from host.data.datasets import Dataset, load_dataset
from host.quiet import user_err
from host.zoo import PRETRAINED, ZOO_VERSION, ZooEntry, ZooError, cache_dir, entry

Progress = Optional[Callable[[str], None]]


def _stderr(msg: str) -> None:
    print(msg, file=user_err(), flush=True)


def train_threads() -> int:
    """Intra-op threads for training: 1 unless EDGEBENCH_TRAIN_THREADS says otherwise.

    Measured on the 2-core machine shared with other work (load 1.7-4): a ResNet-8 training step
    took 41-67 ms with 1 thread and 160-290 ms with 2 - spinning OpenMP threads fight the other
    processes for the cores, and an idle machine gains far less from the second thread than a busy
    one loses."""
    env = os.environ.get("EDGEBENCH_TRAIN_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def build(name: str) -> Any:
    """An untrained instance of a zoo architecture."""
    from host.zoo import nets

    return getattr(nets, entry(name).arch)()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_info(name: str, root: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """The cache json of a trained model of the current version, or None."""
    if name in PRETRAINED:  # weights live in a pip package, not in the cache
        return None
    root = root or cache_dir()
    meta, weights = root / f"{name}.json", root / f"{name}.pt"
    if not (meta.is_file() and weights.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
    except ValueError:
        return None
    return info if info.get("version") == ZOO_VERSION else None


def get(name: str, root: Optional[Path] = None, progress: Progress = _stderr, **train_kw: Any) -> Any:
    """The trained model (eval mode): from the cache, or trained now and cached."""
    import torch

    e = entry(name)
    if e.pretrained:
        from host.zoo import models

        return getattr(models, e.factory)()
    root = root or cache_dir()
    with _locked(root / f"{name}.lock"):
        if cached_info(name, root) is None:
            train(name, root=root, progress=progress, **train_kw)
        model = build(name)
        model.load_state_dict(torch.load(root / f"{name}.pt", map_location="cpu", weights_only=True))
    return model.eval()


def train(name: str, root: Optional[Path] = None, epochs: Optional[int] = None, limit: Optional[int] = None,
          progress: Progress = _stderr, seed: int = 0) -> dict[str, Any]:
    """Train `name` from scratch, score it on the test split, write the cache; returns the cache json."""
    import torch

    e = entry(name)
    if e.pretrained:
        raise ZooError(f"{name} is pretrained (weights from pip package {e.package}): nothing to train")
    root = root or cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ZooError(f"cannot create the model cache {root}: {err} (set EDGEBENCH_CACHE)") from err
    torch.set_num_threads(train_threads())
    torch.manual_seed(seed)
    say = progress or (lambda _m: None)
    epochs = epochs or e.epochs
    t0 = time.perf_counter()
    train_ds = load_dataset(e.dataset, split="train", limit=limit or e.train_limit)
    model = build(name)
    say(f"zoo: training {name} ({e.description}): {len(train_ds)} samples, {epochs} epochs, "
        f"{torch.get_num_threads()} thread(s)")
    _fit(model, e, train_ds, epochs, say, seed)
    train_s = time.perf_counter() - t0
    metrics = score(name, model)
    info = {"name": name, "version": ZOO_VERSION, "arch": e.arch, "task": e.task, "dataset": e.dataset,
            "epochs": epochs, "train_samples": len(train_ds), "train_s": round(train_s, 1),
            "params": int(sum(p.numel() for p in model.parameters())), "metrics": metrics,
            "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = root / f".{name}.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(root / f"{name}.pt")
    (root / f".{name}.json.tmp").write_text(json.dumps(info, indent=2))
    (root / f".{name}.json.tmp").replace(root / f"{name}.json")
    say(f"zoo: {name} trained in {train_s:.0f} s: {e.metric} {metrics.get(e.metric, float('nan')):.3f} "
        f"on the test split -> {root / (name + '.pt')}")
    return info


def _batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for i in range(0, n, batch):
        yield order[i:i + batch]


def _fit(model: Any, e: ZooEntry, ds: Dataset, epochs: int, say: Callable[[str], None], seed: int) -> None:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(ds.x))
    targets = _targets(e, ds)
    steps = epochs * ((len(ds) + e.batch - 1) // e.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=e.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=e.lr, total_steps=steps, pct_start=0.25)
    rng = np.random.default_rng(seed)
    model.train()
    for ep in range(epochs):
        t0, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(len(ds), e.batch, rng):
            ti = torch.from_numpy(idx)
            xb = x[ti]
            if e.task == "classification":  # horizontal flips: free accuracy on clothing images
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = _loss(e, model(xb), [t[ti] for t in targets])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        say(f"zoo: {e.name} epoch {ep + 1}/{epochs} loss {total / count:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.eval()


def _targets(e: ZooEntry, ds: Dataset) -> list[Any]:
    import torch

    if e.task == "classification":
        return [torch.from_numpy(ds.y.astype(np.int64))]
    if e.task == "segmentation":
        return [torch.from_numpy(ds.meta["masks"].astype(np.int64))]
    from host.zoo.decode import encode
    from host.zoo.nets import CenterNetTiny

    grid = ds.x.shape[-1] // CenterNetTiny.stride
    enc = [encode(b, lab, 3, grid, CenterNetTiny.stride) for b, lab in zip(ds.meta["boxes"], ds.meta["labels"])]
    return [torch.from_numpy(np.stack([t[i] for t in enc])) for i in range(3)]


def _loss(e: ZooEntry, out: Any, tgt: list[Any]) -> Any:
    import torch.nn.functional as F

    if e.task == "classification":
        return F.cross_entropy(out, tgt[0], label_smoothing=0.05)
    if e.task == "segmentation":
        return F.cross_entropy(out, tgt[0])
    return _centernet_loss(out, *tgt)


def _centernet_loss(out: Any, heat: Any, reg: Any, mask: Any) -> Any:
    """CenterNet's penalty-reduced focal loss on the heatmap + L1 on size/offset at the centres."""
    import torch

    c = heat.shape[1]
    p = torch.sigmoid(out[:, :c]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg_w = (1 - heat) ** 4
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p ** 2 * neg_w * (1 - pos)).sum()
    n = pos.sum().clamp(min=1)
    focal = -(pos_loss + neg_loss) / n
    m = mask[:, None]
    l1 = (torch.abs(out[:, c:c + 4] - reg) * m).sum(dim=(0, 2, 3)) / mask.sum().clamp(min=1)
    return focal + 0.1 * (l1[0] + l1[1]) + l1[2] + l1[3]


def predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Raw outputs of a torch model over an NCHW float array, in batches, without gradients."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).numpy())
    return np.concatenate(outs)


def score(name: str, model: Any, limit: Optional[int] = None) -> dict[str, Any]:
    """The task metrics of a torch model on its test split."""
    from host.tasks import task_metrics

    e = entry(name)
    ds = load_dataset(e.dataset, split="test", limit=limit)
    return task_metrics(e.task, predict(model.eval(), ds.x), ds)
