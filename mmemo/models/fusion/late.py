"""Late fusion: the shared head scores each modality alone; the scores are averaged with learned weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion, masked_softmax, pooled_projections
from mmemo.registry import register_fusion


@dataclass
class LateConfig(FusionConfig):
    name: str = "late"


@register_fusion("late", config=LateConfig)
class LateFusion(Fusion):
    """Late fusion: the shared head's logits per modality, averaged with learned weights over those present.

    Decision-level fusion as in the late-fusion baselines of Snoek et al., "Early versus late fusion
    in semantic video analysis" (ACM MM 2005). Each modality's pooled embedding gets its own
    projection ``h_m``; the logits are ``sum_m a_m * head(h_m)`` with ``a = softmax(w)`` taken over the
    modalities the example has, so an absent modality gets weight exactly 0 and one present modality
    gets weight 1. The shared head is ``Dropout + Linear``, an affine map, and the weights sum to 1, so
    ``sum_m a_m * head(h_m) == head(sum_m a_m * h_m)``: this module returns ``sum_m a_m * h_m`` and keeps
    the fusion contract while the model's one head produces exactly the late-fused logits. Because the
    logits are additive over modalities, late fusion cannot model interactions (e.g. an XOR of two
    modalities); that is what separates it from the other methods.
    """

    def __init__(self, config: LateConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        self.proj = pooled_projections(input_dims, modalities, config.dim)
        self.act = nn.Sequential(nn.GELU(), nn.Dropout(config.dropout))
        self.weight_logits = nn.Parameter(torch.zeros(len(modalities)))

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        per_modality = torch.stack([self.act(self.proj[m](embeddings[m].pooled)) for m in self.modalities], dim=1)
        weights = masked_softmax(self.weight_logits.to(per_modality.dtype).expand(present.shape), present)
        return (weights.unsqueeze(-1) * per_modality).sum(1)
