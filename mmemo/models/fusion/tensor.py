"""Tensor fusion: the outer product of ``[h_m; 1]`` over modalities holds every uni-, bi- and trimodal term."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError, FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion, pooled_projections
from mmemo.registry import register_fusion


@dataclass
class TensorConfig(FusionConfig):
    name: str = "tensor"
    modality_dim: int = 16  # size of each h_m; the tensor has prod(modality_dim + 1) entries

    def validate(self, key: str) -> None:
        if self.modality_dim < 1:
            raise ConfigError(f"{key}.modality_dim: must be >= 1, got {self.modality_dim}")


def with_one(h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``[h; 1]`` where the modality is present and ``[0; 1]`` where it is absent, so an absent
    modality keeps only the terms of the others: ``[0; 1]`` is the neutral element of the product."""
    h = torch.where(present, h, 0.0)
    return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=-1)


@register_fusion("tensor", config=TensorConfig)
class TensorFusion(Fusion):
    """Tensor fusion network (TFN): an MLP over the flattened outer product of [h_m; 1] vectors.

    Zadeh, Chen, Poria, Cambria and Morency, "Tensor Fusion Network for Multimodal Sentiment
    Analysis" (EMNLP 2017). Appending 1 to every ``h_m`` makes the outer product contain the
    unimodal vectors and every bimodal and trimodal product. An absent modality is ``[0; 1]``: the
    tensor then equals the one of the present modalities alone, embedded in the full tensor, so the
    output depends only on what the example has. Its size grows as ``(modality_dim + 1) ** M``.
    """

    def __init__(self, config: TensorConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        k = config.modality_dim
        self.proj = pooled_projections(input_dims, modalities, k)
        self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear((k + 1) ** len(modalities), config.dim), nn.GELU(),
                                 nn.Dropout(config.dropout))

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        product = None
        for m in self.modalities:
            z = with_one(self.proj[m](embeddings[m].pooled), self.column(present, m))
            product = z if product is None else (product.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        return self.mlp(product)
