"""Cross-modal attention: each modality's tokens attend to every other modality's tokens (MulT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.attention import MultiHeadAttention, Segments, TransformerLayer, segment_mean
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.sequence import AttentionFusionConfig, TokenProjection, run_layer
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

    Pre-norm as in MulT: ``Z += CrossAttn(LN(Z), LN(X_s))``, ``Z += FFN(LN(Z))``, on packed tokens. A
    row whose source has no valid token gets no attention update, only the feed-forward on the target.
    """

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.norm_target = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, attention_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: torch.Tensor, source: torch.Tensor, target_segments: Segments,
                source_segments: Segments) -> torch.Tensor:
        attended = self.attn(self.norm_target(target), self.norm_source(source), target_segments, source_segments)
        target = target + self.dropout(attended)  # zeros where the example has no source token
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

    Tokens stay packed (``attention.py``): padding is never computed, and each example's attention
    runs in PyTorch's fused kernels, so no attention matrix is kept for backward.
    """

    def __init__(self, config: CrossAttentionConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p, pa = config.dim, config.dropout, config.attention_dropout
        self.tokens = nn.ModuleDict({m: TokenProjection(input_dims[m], d, p) for m in modalities})
        self.cross = nn.ModuleDict({
            self.direction(s, t): nn.ModuleList(CrossModalLayer(d, config.heads, p, pa) for _ in range(config.layers))
            for t in modalities for s in modalities if s != t
        })
        sources = len(modalities) - 1
        self.merge = nn.ModuleDict({t: nn.Linear(sources * d, d) if sources > 1 else nn.Identity() for t in modalities})
        self.self_attn = nn.ModuleDict({
            t: nn.ModuleList(TransformerLayer(d, config.heads, p, pa) for _ in range(config.self_layers)) for t in modalities
        })
        self.norm = nn.ModuleDict({t: nn.LayerNorm(d) for t in modalities})
        self.missing = nn.ParameterDict({t: nn.Parameter(torch.zeros(d)) for t in modalities})
        self.out = nn.Sequential(nn.Linear(d * len(modalities), d), nn.GELU(), nn.Dropout(p))

    @staticmethod
    def direction(source: str, target: str) -> str:
        return f"{source}_to_{target}"

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        # packed valid tokens; an absent modality has none (its mask is all false)
        tokens, segments = {}, {}
        for m in self.modalities:
            tokens[m], segments[m] = self.tokens[m](embeddings[m].seq, embeddings[m].mask)
        recompute = self.config.checkpoint_layers
        pooled = []
        for t in self.modalities:
            streams = []
            for s in self.modalities:
                if s == t:
                    continue
                z = tokens[t]
                for layer in self.cross[self.direction(s, t)]:
                    z = run_layer(layer, z, tokens[s], segments[t], segments[s], recompute=recompute)
                streams.append(z)
            z = self.merge[t](torch.cat(streams, dim=-1)) if streams else tokens[t]
            for layer in self.self_attn[t]:
                z = run_layer(layer, z, segments[t], recompute=recompute)
            h = segment_mean(self.norm[t](z), segments[t])
            pooled.append(self.or_missing(h, present, t))
        return self.out(torch.cat(pooled, dim=-1))
