"""A tiny causal transformer for text: the victim of the text track's attacks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bench.contracts import Arch, DatasetMeta
from bench.registry import Param, register_arch


class Block(nn.Module):
    """Pre-LayerNorm block: x + attention(LN(x)), then x + MLP(LN(x)); causal attention.

    The query, key and value maps are one linear layer (``qkv``) whose input is
    ``ln1(x)``: DAGER's span check reads that layer's weight gradient."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        mask = torch.ones(n, n, dtype=torch.bool, device=h.device).triu(1)
        att = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        h = h + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.ln2(h))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings, causal blocks, a final LayerNorm and a head: per
    position (language model) or on the mean over positions (classification).

    ``forward`` takes token ids (B×L, long) or, for optimisation attacks, continuous token
    embeddings (B×L×width, float) to which the position embeddings are added the same way."""

    def __init__(self, vocab: int, length: int, width: int, layers: int, heads: int,
                 hidden: int, outputs: int, per_position: bool) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(length, width)
        self.blocks = nn.ModuleList(Block(width, heads, hidden) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)
        self.per_position = per_position

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The first block's input: token (or given) embeddings plus position embeddings."""
        e = x if x.is_floating_point() else self.tok(x)
        return e + self.pos.weight[: e.shape[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inputs(x)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return self.head(h if self.per_position else h.mean(dim=1))


@register_arch("transformer")
class Transformer(Arch):
    """A decoder-style transformer in torch.nn: 1–4 causal pre-LN blocks of width 32–512."""

    paper = "Vaswani et al. 2017; GPT-style causal blocks (Radford et al. 2019)"
    modalities = frozenset({"text"})
    params = (
        Param("width", int, 128, low=8, high=1024, help="embedding width d"),
        Param("layers", int, 2, low=1, high=8, help="transformer blocks"),
        Param("heads", int, 4, low=1, high=64, help="attention heads (divide width)"),
        Param("mlp_ratio", int, 2, low=1, high=8, help="MLP hidden width / width"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        """The heads split the width evenly (refused when the suite loads, not per cell)."""
        if config["width"] % config["heads"]:
            return f"width {config['width']} is not divisible by heads {config['heads']}"
        return None

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise ValueError("transformer is a text architecture: it needs a text dataset's "
                         "vocabulary and task (build_for)")

    def build_for(self, meta: DatasetMeta) -> nn.Module:
        if meta.modality != "text":
            raise ValueError("transformer takes token sequences: use a text dataset")
        lm = meta.task == "lm"
        return TinyTransformer(len(meta.vocab), meta.shape[0], self.width, self.layers,
                               self.heads, self.mlp_ratio * self.width,
                               len(meta.vocab) if lm else meta.num_classes, per_position=lm)

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        """GPT-2's initialisation, less its residual scaling: linear and embedding weights
        N(0, 0.02²), biases 0, LayerNorms at identity; drawn from the cell's seed. GPT-2 also
        shrinks the residual projections by 1/√(2·layers); the committed text records were drawn
        without that factor, so it stays out."""
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()


