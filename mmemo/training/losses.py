"""The main loss, for imbalanced emotion data: weighted cross-entropy or focal loss, with label smoothing.
The terms that can join it are in ``loss_terms/``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import TrainConfig
from mmemo.labels import IGNORE


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """``n / (C * count_c)`` (scikit-learn's "balanced"); a class absent from train gets weight 1."""
    counts_t = torch.tensor(counts, dtype=torch.float)
    seen = counts_t > 0
    weights = torch.ones_like(counts_t)
    weights[seen] = counts_t[seen].sum() / (seen.sum() * counts_t[seen])
    return weights


def labelled_rows(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows with a label (target != IGNORE), or None when no row has one."""
    labelled = target != IGNORE
    if bool(labelled.all()):
        return logits, target
    return (logits[labelled], target[labelled]) if bool(labelled.any()) else None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the rows with a label; 0, still in the graph, when none has one."""
    rows = labelled_rows(logits, target)
    if rows is None:
        return logits.sum() * 0.0
    return F.cross_entropy(rows[0].float(), rows[1], weight=weight, label_smoothing=label_smoothing)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., ICCV 2017): down-weights easy examples by ``(1 - p_t) ** gamma``."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = labelled_rows(logits, target)
        if rows is None:
            return logits.sum() * 0.0
        logits, target = rows
        logp = F.log_softmax(logits.float(), dim=-1)
        ce = F.nll_loss(logp, target, reduction="none") if not self.label_smoothing else F.cross_entropy(
            logits.float(), target, reduction="none", label_smoothing=self.label_smoothing)
        pt = logp.gather(1, target.unsqueeze(1)).squeeze(1).exp()
        loss = (1 - pt) ** self.gamma * ce
        if self.weight is not None:
            w = self.weight.to(loss.device)[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


class WeightedCrossEntropy(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(logits.device) if self.weight is not None else None
        return cross_entropy(logits, target, weight, self.label_smoothing)


def build_criterion(config: TrainConfig, class_counts: Sequence[int]) -> nn.Module:
    if config.class_weights == "auto":
        weight = balanced_class_weights(class_counts)
    elif config.class_weights == "sqrt":
        weight = balanced_class_weights(class_counts).sqrt()
    elif isinstance(config.class_weights, list):
        if len(config.class_weights) != len(class_counts):
            raise ValueError(f"train.class_weights: {len(config.class_weights)} weights for {len(class_counts)} labels")
        weight = torch.tensor(config.class_weights, dtype=torch.float)
    else:
        weight = None
    if config.loss == "focal":
        return FocalLoss(config.focal_gamma, weight, config.label_smoothing)
    return WeightedCrossEntropy(weight, config.label_smoothing)
