"""Gated multimodal units: per-feature gates, computed from every modality, weigh each modality's features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion, masked_softmax, pooled_projections
from mmemo.registry import register_fusion


@dataclass
class GatedConfig(FusionConfig):
    name: str = "gated"


@register_fusion("gated", config=GatedConfig)
class GatedFusion(Fusion):
    """Gated multimodal unit (GMU): learned per-feature gates mix tanh-transformed modality features.

    Arevalo, Solorio, Montes-y-Gómez and González, "Gated Multimodal Units for Information Fusion"
    (ICLR workshop, 2017): ``h_m = tanh(W_m x_m)``, gates ``z = f(W_z [x_1; ...; x_M])`` and
    ``h = sum_m z_m * h_m``. For two modalities the paper's gate is ``z`` and ``1 - z`` with
    ``z = sigmoid(.)``, which is a two-way softmax; here the gates are a per-feature softmax over the
    modalities the example has, so an absent modality gets gate exactly 0 and the remaining gates
    still sum to 1. In the gate input an absent modality is a learned "missing" vector, so the gates
    know what is missing without mistaking zeros for an observation.
    """

    def __init__(self, config: GatedConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        d = config.dim
        self.proj = pooled_projections(input_dims, modalities, d)
        self.features = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Tanh()) for m in modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in modalities})
        self.gate = nn.Linear(d * len(modalities), d * len(modalities))
        self.dropout = nn.Dropout(config.dropout)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        x = {m: self.proj[m](embeddings[m].pooled) for m in self.modalities}
        h = torch.stack([self.features[m](x[m]) for m in self.modalities], dim=1)  # [B, M, d]
        gate_input = torch.cat([self.or_missing(x[m], present, m) for m in self.modalities], dim=-1)
        scores = self.gate(gate_input).view(h.shape)
        gates = masked_softmax(scores, present.unsqueeze(-1).expand_as(scores), dim=1)
        return self.dropout((gates * h).sum(1))
