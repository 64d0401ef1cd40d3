"""Early fusion: concatenate projected pooled embeddings, then an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion, pooled_projections
from mmemo.registry import register_fusion


@dataclass
class ConcatConfig(FusionConfig):
    name: str = "concat"


@register_fusion("concat", config=ConcatConfig)
class ConcatFusion(Fusion):
    """Early fusion of pooled embeddings (concatenation + MLP); absent modalities use a learned token.

    The learned "missing" vector, not zeros, stands in for an absent modality, so absence is a signal
    the model can tell apart from any real embedding (cf. Ma et al., "SMIL", AAAI 2021).
    """

    def __init__(self, config: ConcatConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d = config.dim
        self.proj = pooled_projections(input_dims, modalities, d)
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in modalities})
        self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(d * len(modalities), d), nn.GELU(), nn.Dropout(config.dropout))

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        parts = [self.or_missing(self.proj[m](embeddings[m].pooled), present, m) for m in self.modalities]
        return self.mlp(torch.cat(parts, dim=-1))
