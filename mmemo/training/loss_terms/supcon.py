"""A supervised contrastive term on the fused embeddings (Khosla et al., NeurIPS 2020; Gunel et al., ICLR 2021
for fine-tuning): same-label rows of a batch pulled together, the others pushed apart, so that classes separate
in the space the head reads. Training only; it costs almost nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmemo.config import LossTermConfig
from mmemo.errors import ConfigError
from mmemo.labels import IGNORE
from mmemo.models.model import EmotionModelOutput
from mmemo.registry import register_loss_term
from mmemo.training.loss_terms.base import LossTerm


@dataclass
class SupConConfig(LossTermConfig):
    name: str = "supcon"
    temperature: float = 0.3  # of the cosine similarities

    def validate(self, key: str) -> None:
        super().validate(key)
        if self.temperature <= 0:
            raise ConfigError(f"{key}.temperature: must be > 0, got {self.temperature}")


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
    """The mean over anchors of ``-log`` the softmax mass (over the batch) of the anchor's positives, on
    L2-normalised embeddings. Anchors without a positive in the batch are left out; a batch without any
    positive pair gives 0."""
    z = F.normalize(features.float(), dim=-1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(1)
    anchors = counts > 0
    if not bool(anchors.any()):
        return features.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / counts[anchors]
    return -mean_log_prob.mean()


@register_loss_term("supcon", config=SupConConfig)
class SupervisedContrastive(LossTerm):
    """Supervised contrastive loss on the fused embeddings (Khosla et al. 2020)."""

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        labels = batch["labels"]
        labelled = labels != IGNORE
        return supervised_contrastive(outputs.fused[labelled], labels[labelled], self.config.temperature)
