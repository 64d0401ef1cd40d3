"""Cross-modal attention: each modality's tokens attend to every other modality's tokens (MulT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError
from mmemo.models.encoders.base import ModalityEmbedding, masked_mean
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.sequence import (
    AttentionFusionConfig,
    TokenProjection,
    key_padding_mask,
    transformer_layer,
)
from mmemo.registry import register_fusion


@dataclass
class CrossAttentionConfig(AttentionFusionConfig):
    name: str = "cross_attention"
    self_layers: int = 1  # self-attention layers over each target's merged cross-modal streams

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.self_layers < 0:
            raise ConfigError(f"{key}.self_layers: must be >= 0, got {self.self_layers}")


class CrossModalLayer(nn.Module):
    """One directional cross-modal block: target tokens attend to a source sequence, then feed-forward.

    Pre-norm as in MulT: ``Z += CrossAttn(LN(Z), LN(X_s))``, ``Z += FFN(LN(Z))``. A row whose source
    has no valid token gets no attention update, only the feed-forward on the target itself.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_target = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, source: torch.Tensor, source_valid: torch.Tensor) -> torch.Tensor:
        source = self.norm_source(source)
        attended, _ = self.attn(self.norm_target(target), source, source,
                                key_padding_mask=key_padding_mask(source_valid), need_weights=False)
        has_source = source_valid.any(1)[:, None, None]
        target = target + torch.where(has_source, self.dropout(attended), 0.0)
        return target + self.dropout(self.ff(self.norm_ff(target)))


@register_fusion("cross_attention", config=CrossAttentionConfig)
class CrossAttentionFusion(Fusion):
    """Cross-modal transformer (MulT): directional cross-attention blocks over unaligned token sequences.

    Tsai, Bai, Liang, Kolter, Morency and Salakhutdinov, "Multimodal Transformer for Unaligned
    Multimodal Language Sequences" (ACL 2019). For every ordered pair (source -> target) a stack of
    ``layers`` blocks lets the target's tokens attend to the source's tokens, so sequences of
    different lengths (text tokens, audio frames, video frames) need no alignment. Each target's
    source streams are concatenated, projected, passed through ``self_layers`` self-attention layers
    and mean-pooled over the target's valid tokens; the targets' vectors are concatenated and mixed.

    Missing modalities: an absent source is masked out of the attention (the block keeps only its
    feed-forward on the target), and an absent target is replaced by a learned "missing" vector, as
    in ``concat``. A model of one modality has no cross-modal blocks, only its self-attention layers.
    """

    def __init__(self, config: CrossAttentionConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p = config.dim, config.dropout
        self.tokens = nn.ModuleDict({m: TokenProjection(input_dims[m], d, p) for m in modalities})
        self.cross = nn.ModuleDict({
            self.direction(s, t): nn.ModuleList(CrossModalLayer(d, config.heads, p) for _ in range(config.layers))
            for t in modalities for s in modalities if s != t
        })
        sources = len(modalities) - 1
        self.merge = nn.ModuleDict({t: nn.Linear(sources * d, d) if sources > 1 else nn.Identity() for t in modalities})
        self.self_attn = nn.ModuleDict({
            t: nn.ModuleList(transformer_layer(d, config.heads, p) for _ in range(config.self_layers)) for t in modalities
        })
        self.norm = nn.ModuleDict({t: nn.LayerNorm(d) for t in modalities})
        self.missing = nn.ParameterDict({t: nn.Parameter(torch.zeros(d)) for t in modalities})
        self.out = nn.Sequential(nn.Linear(d * len(modalities), d), nn.GELU(), nn.Dropout(p))

    @staticmethod
    def direction(source: str, target: str) -> str:
        return f"{source}_to_{target}"

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        tokens = {m: self.tokens[m](embeddings[m].seq) for m in self.modalities}
        valid = {m: embeddings[m].mask for m in self.modalities}  # all-false where the modality is absent
        pooled = []
        for t in self.modalities:
            streams = []
            for s in self.modalities:
                if s == t:
                    continue
                z = tokens[t]
                for layer in self.cross[self.direction(s, t)]:
                    z = layer(z, tokens[s], valid[s])
                streams.append(z)
            z = self.merge[t](torch.cat(streams, dim=-1)) if streams else tokens[t]
            ignore = key_padding_mask(valid[t])
            for layer in self.self_attn[t]:
                z = layer(z, src_key_padding_mask=ignore)
            h = masked_mean(self.norm[t](z), valid[t])
            pooled.append(self.or_missing(h, present, t))
        return self.out(torch.cat(pooled, dim=-1))
