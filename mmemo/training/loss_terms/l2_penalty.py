"""An L2 penalty: half the squared norm of every trainable weight matrix. Unlike AdamW's decoupled weight decay,
which barely moves weights in a few hundred steps, it is the penalty of a regularised logistic regression
(scikit-learn's ``1 / (C * n)``), for small data and linear probes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmemo.config import LossTermConfig
from mmemo.models.model import EmotionModelOutput
from mmemo.registry import register_loss_term
from mmemo.training.loss_terms.base import LossTerm


@dataclass
class L2PenaltyConfig(LossTermConfig):
    name: str = "l2"


@register_loss_term("l2", config=L2PenaltyConfig)
class L2Penalty(LossTerm):
    """Half the squared L2 norm of the trainable weight matrices (a regularised logistic regression's penalty)."""

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        matrices = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        return sum(p.float().pow(2).sum() for p in matrices) / 2
