"""Tiny models for tests and the quantize benchmark, usable as factories ("tests.models_for_tests:small_cnn").

Each factory returns an eval-mode nn.Module carrying `input_shape` (so no --input-shape is needed).
`*_trained` factories fit the model briefly on Fashion-MNIST (seeded, cached on disk) so that agreement
checks compare real decision margins instead of the near-ties of random weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

FASHION_SHAPE = (1, 1, 28, 28)


class SmallCNN(nn.Module):
    """conv-bn-relu x3 + a Linear head big enough (~0.3 M weights) for int8 to shrink it ~4x."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(1, 32, 1), block(32, 64, 2), block(64, 64, 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 96), nn.ReLU(), nn.Linear(96, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyTransformer(nn.Module):
    """Sequence classifier: (1, 16, 64) tokens -> 2-layer TransformerEncoder -> mean -> Linear."""

    def __init__(self, d: int = 64, classes: int = 10) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)
        # TransformerEncoder deep-copies one layer: re-initialise so the layers differ (else freezing
        # deduplicates identical weights and sizes say nothing)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


class TokenClassifier(nn.Module):
    """int64 token ids (1, 16) -> a 4000-entry embedding table -> mean -> 2 Linear: a text model in miniature
    (most of its bytes are the vocabulary table)."""

    def __init__(self, vocab: int = 4000, d: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.head = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).mean(dim=1))


class ReLU6Net(nn.Module):
    """conv -> ReLU6 twice, GAP, Linear; the convs' raw outputs span about +-40 while ReLU6 keeps [0, 6]: what
    MobileNet/EfficientNet-Lite layers look like to a quantizer."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():
            self.c1.weight.mul_(20.0)
            self.c2.weight.mul_(8.0)
            self.c2.bias.fill_(-6.0)   # some channels below zero, some above six: the clamp matters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.c2(nn.functional.relu6(self.c1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())
        self.r2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))) + self.short(x))


class ResNet8(nn.Module):
    """ResNet-8-style CNN (stride-2 stem, 3 residual stages, GAP + Linear), ~78k params at width 16."""

    def __init__(self, width: int = 16, classes: int = 10, in_ch: int = 1) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(_Residual(w, w, 1), _Residual(w, 2 * w, 2), _Residual(2 * w, 4 * w, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def _with_shape(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    model.input_shape = shape  # read by host.models.torch_source
    return model.eval()


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _with_shape(SmallCNN(), FASHION_SHAPE)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return _with_shape(MLP(), FASHION_SHAPE)


def token_classifier() -> nn.Module:
    torch.manual_seed(0)
    model = _with_shape(TokenClassifier(), (1, 16))
    model.input_dtype = "int64"
    return model


def relu6_net() -> nn.Module:
    torch.manual_seed(0)
    return _with_shape(ReLU6Net(), (1, 3, 16, 16))


def tiny_transformer() -> nn.Module:
    torch.manual_seed(0)
    return _with_shape(TinyTransformer(), (1, 16, 64))


def resnet8() -> nn.Module:
    torch.manual_seed(0)
    return _with_shape(ResNet8(), FASHION_SHAPE)


def resnet8_w64() -> nn.Module:
    """The same ResNet-8 at width 64 (~1.2 M params): shows how int8 gains grow once compute, not
    per-op dispatch, dominates a batch-1 inference."""
    torch.manual_seed(0)
    return _with_shape(ResNet8(width=64), FASHION_SHAPE)


def not_a_module() -> str:
    """A broken factory for the error-path tests."""
    return "not a model"


def _cache_dir() -> Path:
    d = Path(os.environ.get("EDGEBENCH_TEST_CACHE", Path(tempfile.gettempdir()) / "edgebench-test-models"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fit(model: nn.Module, samples: int = 2000, epochs: int = 1, seed: int = 0, lr: float = 2e-3) -> nn.Module:
    """Brief seeded training on Fashion-MNIST (the Debian package; digits if it is missing)."""
    from host.data.datasets import DatasetError, load_dataset

    try:
        ds = load_dataset("fashion-mnist", limit=samples)
    except DatasetError:
        ds = load_dataset("digits", limit=samples)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    if tuple(x.shape[1:]) != tuple(model.input_shape[1:]):
        x = torch.nn.functional.interpolate(x, size=model.input_shape[2:])
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _trained(name: str, factory, samples: int = 2000) -> nn.Module:
    model = factory()
    path = _cache_dir() / f"{name}-{samples}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    fit(model, samples)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def small_cnn_trained() -> nn.Module:
    return _trained("small_cnn", small_cnn)


def mlp_trained() -> nn.Module:
    return _trained("mlp", mlp)


def resnet8_trained() -> nn.Module:
    return _trained("resnet8", resnet8)


def qat_train(model: nn.Module, dataset, epochs: int) -> None:
    """A user QAT function (--train-fn tests.models_for_tests:qat_train): a few SGD steps on `dataset`,
    marking the model so tests can see it was called."""
    x = torch.from_numpy(dataset.x[:256]).reshape(-1, *model_input_shape(model)[1:]) if dataset is not None \
        else torch.randn(256, 1, 28, 28)
    y = torch.from_numpy(dataset.y[:256]) if dataset is not None else torch.randint(0, 10, (256,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    QAT_CALLS.append(epochs)


QAT_CALLS: list[int] = []


def model_input_shape(model: nn.Module) -> tuple[int, ...]:
    return tuple(getattr(model, "input_shape", FASHION_SHAPE))
