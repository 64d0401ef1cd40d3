"""Attention bottlenecks: modality streams exchange information only through a few shared tokens (MBT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.sequence import AttentionFusionConfig, TokenProjection, transformer_layer
from mmemo.registry import register_fusion


@dataclass
class BottleneckConfig(AttentionFusionConfig):
    name: str = "bottleneck"
    bottleneck_tokens: int = 4
    fusion_layer: int = 0  # layers before this index are unimodal; from it on, streams share the bottleneck

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.bottleneck_tokens < 1:
            raise ConfigError(f"{key}.bottleneck_tokens: must be >= 1, got {self.bottleneck_tokens}")
        # One fusion layer writes into the bottleneck, a later one reads it into the CLS tokens.
        if not 0 <= self.fusion_layer <= self.layers - 2:
            raise ConfigError(f"{key}.fusion_layer: must be in [0, layers - 2] so that at least two layers share "
                              f"the bottleneck, got {self.fusion_layer} with layers={self.layers}")


def present_mean(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of ``x[B, M, ...]`` over the modalities present in each row (``present[B, M]``); absent
    entries are selected away, not multiplied by zero, and an empty row gives zeros."""
    keep = present.view(*present.shape, *([1] * (x.dim() - 2)))
    total = torch.where(keep, x, 0.0).sum(1)
    return total / present.sum(1).clamp_min(1).to(x.dtype).view(-1, *([1] * (x.dim() - 2)))


@register_fusion("bottleneck", config=BottleneckConfig)
class BottleneckFusion(Fusion):
    """Multimodal bottleneck transformer (MBT): per-modality transformers sharing a few bottleneck tokens.

    Nagrani, Yang, Arnab, Jansen, Schmid and Sun, "Attention Bottlenecks for Multimodal Fusion"
    (NeurIPS 2021). Each modality has its own transformer over ``[CLS_m; tokens_m]``. From layer
    ``fusion_layer`` on, every stream also attends over ``bottleneck_tokens`` shared tokens; after each
    such layer the bottleneck is the mean of the streams' updated copies, so cross-modal information
    flows only through that narrow channel; it reaches a CLS token one layer after entering the
    bottleneck, hence at least two fusion layers. The output is the mean of the streams' CLS vectors
    (MBT averages the per-stream logits; the head is affine, so the two agree).

    Missing modalities: an absent stream is left out of the bottleneck mean and of the CLS mean, so
    it contributes nothing; CLS and bottleneck tokens are always valid keys, so no attention row is
    ever empty.
    """

    def __init__(self, config: BottleneckConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p = config.dim, config.dropout
        self.tokens = nn.ModuleDict({m: TokenProjection(input_dims[m], d, p) for m in modalities})
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, d) * 0.02) for m in modalities})
        self.bottleneck = nn.Parameter(torch.randn(1, config.bottleneck_tokens, d) * 0.02)
        self.layers = nn.ModuleDict({
            m: nn.ModuleList(transformer_layer(d, config.heads, p) for _ in range(config.layers)) for m in modalities
        })
        self.norm = nn.LayerNorm(d)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        batch = present.shape[0]
        streams, ignore = {}, {}
        for m in self.modalities:
            tokens = self.tokens[m](embeddings[m].seq)
            streams[m] = torch.cat([self.cls[m].to(tokens.dtype).expand(batch, -1, -1), tokens], dim=1)
            ignore[m] = ~torch.cat([embeddings[m].mask.new_ones(batch, 1), embeddings[m].mask], dim=1)
        shared = self.bottleneck.expand(batch, -1, -1)
        n = shared.shape[1]
        for i in range(self.config.layers):
            if i < self.config.fusion_layer:
                for m in self.modalities:
                    streams[m] = self.layers[m][i](streams[m], src_key_padding_mask=ignore[m])
                continue
            copies = []
            for m in self.modalities:
                x = torch.cat([streams[m], shared.to(streams[m].dtype)], dim=1)
                x = self.layers[m][i](x, src_key_padding_mask=torch.cat([ignore[m], ignore[m].new_zeros(batch, n)], 1))
                streams[m], copy = x[:, :-n], x[:, -n:]
                copies.append(copy)
            shared = present_mean(torch.stack(copies, dim=1), present)
        cls = torch.stack([streams[m][:, 0] for m in self.modalities], dim=1)
        return self.norm(present_mean(cls, present))
