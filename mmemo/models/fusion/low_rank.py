"""Low-rank multimodal fusion: tensor fusion with its weight tensor factorised per modality."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError, FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion, pooled_projections
from mmemo.models.fusion.tensor import with_one
from mmemo.registry import register_fusion


@dataclass
class LowRankConfig(FusionConfig):
    name: str = "low_rank"
    modality_dim: int = 32  # size of each h_m before the factors
    rank: int = 4  # rank of the modality-specific factors

    def validate(self, key: str) -> None:
        for name in ("modality_dim", "rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: must be >= 1, got {getattr(self, name)}")


@register_fusion("low_rank", config=LowRankConfig)
class LowRankFusion(Fusion):
    """Low-rank multimodal fusion (LMF): tensor fusion computed through rank-r modality-specific factors.

    Liu, Shen, Lakshminarasimhan, Liang, Zadeh and Morency, "Efficient Low-rank Multimodal Fusion
    with Modality-Specific Factors" (ACL 2018). The TFN weight tensor is a sum of ``rank`` outer
    products of per-modality factors, so ``W . (z_1 x ... x z_M) = sum_r w_r prod_m (z_m W_m^(r))``
    with ``z_m = [h_m; 1]``, linear in every modality instead of exponential in their number. An
    absent modality is ``[0; 1]``, as in tensor fusion: its factor reduces to a learned constant
    per rank, the same for every example, and the output depends only on the modalities present.
    """

    def __init__(self, config: LowRankConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        k, r = config.modality_dim, config.rank
        self.proj = pooled_projections(input_dims, modalities, k)
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.randn(r, k + 1, config.dim) / (k + 1) ** 0.5) for m in modalities})
        self.rank_weights = nn.Parameter(torch.full((r,), 1.0 / r))
        self.bias = nn.Parameter(torch.zeros(config.dim))
        self.dropout = nn.Dropout(config.dropout)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        product = None
        for m in self.modalities:
            z = with_one(self.proj[m](embeddings[m].pooled), self.column(present, m))
            f = torch.einsum("bi,rio->bro", z, self.factors[m])  # [B, rank, dim]
            product = f if product is None else product * f
        fused = torch.einsum("r,bro->bo", self.rank_weights, product) + self.bias
        return self.dropout(fused)
