"""The fusion contract: ``forward(embeddings, present) -> fused[B, F]`` with ``.dim``.

``present[B, M]`` (columns in ``self.modalities`` order) says which modalities each example really
has. An absent modality must contribute nothing: fusions select with ``torch.where`` on ``present``
rather than trusting the zeros in the absent rows.
"""

from __future__ import annotations

import torch
from torch import nn

from mmemo.config import FusionConfig
from mmemo.models.encoders.base import ModalityEmbedding


class Fusion(nn.Module):
    registry_name: str

    def __init__(self, config: FusionConfig, input_dims: dict[str, int], modalities: list[str]):
        super().__init__()
        self.config = config
        self.modalities = list(modalities)
        self.input_dims = dict(input_dims)
        self.dim = config.dim

    def forward(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def column(self, present: torch.Tensor, modality: str) -> torch.Tensor:
        """``present[:, m]`` as a ``[B, 1]`` bool column, for ``torch.where``."""
        return present[:, self.modalities.index(modality)].unsqueeze(-1)
