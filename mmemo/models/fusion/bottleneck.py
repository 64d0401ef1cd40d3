"""Attention bottlenecks: modality streams exchange information only through a few shared tokens (MBT)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.attention import Concatenation, Segments, TransformerLayer
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.sequence import AttentionFusionConfig, TokenProjection, run_layer
from mmemo.registry import register_fusion


@dataclass
class BottleneckConfig(AttentionFusionConfig):
    name: str = "bottleneck"
    bottleneck_tokens: int = 4  # shared bottleneck tokens through which the modalities exchange information
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

    Each stream stays packed (``attention.py``): per example ``[CLS; valid tokens]``, plus the
    bottleneck tokens in fusion layers, so padding is never computed and attention runs unmasked in
    PyTorch's fused kernels.
    """

    def __init__(self, config: BottleneckConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d, p = config.dim, config.dropout
        self.tokens = nn.ModuleDict({m: TokenProjection(input_dims[m], d, p) for m in modalities})
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, d) * 0.02) for m in modalities})
        self.bottleneck = nn.Parameter(torch.randn(1, config.bottleneck_tokens, d) * 0.02)
        self.layers = nn.ModuleDict({
            m: nn.ModuleList(TransformerLayer(d, config.heads, p, config.attention_dropout) for _ in range(config.layers))
            for m in modalities
        })
        self.norm = nn.LayerNorm(d)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        batch, n = present.shape[0], self.config.bottleneck_tokens
        ones, shared_rows = Segments((1,) * batch), Segments((n,) * batch)
        streams, stream_rows, with_shared = {}, {}, {}
        for m in self.modalities:  # packed per example: [CLS_m; valid tokens_m] (+ the bottleneck in fusion layers)
            tokens, segments = self.tokens[m](embeddings[m].seq, embeddings[m].mask)
            with_cls = Concatenation.of([ones, segments], tokens.device)
            streams[m] = with_cls.join([self.cls[m].to(tokens.dtype).view(1, -1).expand(batch, -1), tokens])
            stream_rows[m] = with_cls.segments
            with_shared[m] = Concatenation.of([stream_rows[m], shared_rows], tokens.device)
        shared = self.bottleneck.expand(batch, -1, -1)
        recompute = self.config.checkpoint_layers
        for i in range(self.config.layers):
            if i < self.config.fusion_layer:
                for m in self.modalities:
                    streams[m] = run_layer(self.layers[m][i], streams[m], stream_rows[m], recompute=recompute)
                continue
            copies = []
            for m in self.modalities:
                joint = with_shared[m]
                x = joint.join([streams[m], shared.to(streams[m].dtype).reshape(batch * n, -1)])
                x = run_layer(self.layers[m][i], x, joint.segments, recompute=recompute)
                streams[m] = joint.take(x, 0)
                copies.append(joint.take(x, 1).view(batch, n, -1))
            shared = present_mean(torch.stack(copies, dim=1), present)
        cls = torch.stack([streams[m].index_select(0, torch.tensor(stream_rows[m].offsets, device=present.device))
                           for m in self.modalities], dim=1)
        return self.norm(present_mean(cls, present))
