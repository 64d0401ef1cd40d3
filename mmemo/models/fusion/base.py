"""The fusion contract: ``forward(embeddings, present) -> fused[B, F]`` with ``.dim``.

``present[B, M]`` (columns in ``self.modalities`` order) says which modalities each example really
has. An absent modality must contribute nothing: changing its rows must leave the output
bit-identical. ``forward`` therefore hands subclasses (which implement ``fuse``) embeddings whose
absent rows are replaced by zeros and all-false masks, so garbage (even NaN) in those rows cannot
reach the output or the gradients; each method then decides with ``present`` what an absent
modality means for it, never trusting the zeros.
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
        present = present.bool()
        visible = {m: only_present(embeddings[m], present[:, i]) for i, m in enumerate(self.modalities)}
        return self.fuse(visible, present)

    def fuse(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        """Fuse embeddings whose absent rows are already zeroed and masked out; ``present`` is bool."""
        raise NotImplementedError

    def column(self, present: torch.Tensor, modality: str) -> torch.Tensor:
        """``present[:, m]`` as a ``[B, 1]`` bool column, for ``torch.where``."""
        return present[:, self.modalities.index(modality)].unsqueeze(-1)

    def or_missing(self, h: torch.Tensor, present: torch.Tensor, modality: str) -> torch.Tensor:
        """``h`` ``[B, d]`` with the rows where ``modality`` is absent replaced by the learned
        ``self.missing[modality]``, so absence is a signal, not zeros."""
        return torch.where(self.column(present, modality), h, self.missing[modality].to(h.dtype).expand_as(h))


def only_present(embedding: ModalityEmbedding, present: torch.Tensor) -> ModalityEmbedding:
    """The embedding with the rows where ``present[B]`` is False set to zeros and an all-false mask."""
    seq = torch.where(present[:, None, None], embedding.seq, 0.0)
    pooled = torch.where(present[:, None], embedding.pooled, 0.0)
    return ModalityEmbedding(seq, embedding.mask.bool() & present[:, None], pooled)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is True; masked entries get exactly 0. A slice with nothing
    unmasked gets uniform weights (finite, never NaN), which callers only meet for empty examples."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim)


def pooled_projections(input_dims: dict[str, int], modalities: list[str], dim: int) -> nn.ModuleDict:
    """One ``Linear + LayerNorm`` per modality, bringing pooled embeddings to a common width."""
    return nn.ModuleDict({m: nn.Sequential(nn.Linear(input_dims[m], dim), nn.LayerNorm(dim)) for m in modalities})
