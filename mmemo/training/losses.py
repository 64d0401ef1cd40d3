"""Losses for imbalanced emotion data: weighted cross-entropy and focal loss; R-Drop's consistency term;
the supervised contrastive term on fused embeddings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

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


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``(KL(p_a || p_b) + KL(p_b || p_a)) / 2``, summed over classes and averaged over rows (R-Drop's term)."""
    log_a, log_b = F.log_softmax(logits_a.float(), -1), F.log_softmax(logits_b.float(), -1)
    return 0.5 * (F.kl_div(log_b, log_a, reduction="batchmean", log_target=True)
                  + F.kl_div(log_a, log_b, reduction="batchmean", log_target=True))


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.3) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020; Gunel et al., ICLR 2021 for fine-tuning).

    Pulls together the L2-normalised embeddings of same-label rows in the batch and pushes apart the
    others, so that classes separate in the space the head reads, not only along its decision lines.
    Anchors without a positive in the batch are left out; a batch without any positive pair gives 0.
    """
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


def stack_twice(batch: Any) -> Any:
    """The batch followed by itself along dim 0, through dicts, lists and dataclasses (e.g. cached embeddings).

    One forward pass over both copies gives R-Drop its two dropout samples: independent dropout masks per
    row, one backward pass, and nothing that distributed training would see as a second forward.
    """
    if isinstance(batch, torch.Tensor):
        return torch.cat([batch, batch])
    if isinstance(batch, Mapping):
        return type(batch)({k: stack_twice(v) for k, v in batch.items()})
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: stack_twice(getattr(batch, f.name)) for f in dataclasses.fields(batch)})
    if isinstance(batch, (list, tuple)):
        return type(batch)(list(batch) + list(batch))
    return batch
