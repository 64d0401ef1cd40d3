"""No fusion layers: the pooled embeddings side by side, so the one head is a linear probe."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion.base import Fusion
from mmemo.registry import register_fusion


@dataclass
class ProbeConfig(FusionConfig):
    name: str = "probe"


@register_fusion("probe", config=ProbeConfig)
class ProbeFusion(Fusion):
    """Linear probe: the pooled embeddings concatenated as they are, so the head is a linear classifier.

    ``dim`` is their total width (the config's ``dim`` and ``dropout`` are unused); an absent modality
    gets a learned vector, as in ``concat``. With nothing trainable between the embeddings and the
    head's ``Linear``, the model is linear in what the encoders produce: a linear probe of an encoder,
    and on small data with fixed features (e.g. the ``acoustic`` functionals of a few hundred clips)
    the logistic regression that the speech literature reports, which an MLP does not match.
    """

    def __init__(self, config: ProbeConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__(config, input_dims, modalities)
        self.dim = sum(input_dims[m] for m in modalities)
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(input_dims[m])) for m in modalities})

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.or_missing(embeddings[m].pooled, present, m) for m in self.modalities], dim=-1)
