"""Self-distillation towards the moving average of the weights (Xu et al. 2020, "Improving BERT fine-tuning via
self-ensemble and self-distillation"): the mean squared error between the model's logits and the average's (in
eval mode, without gradient) joins the loss. One more forward pass a step; needs ``train.ema_decay``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mmemo.config import Config, LossTermConfig
from mmemo.errors import ConfigError
from mmemo.models.model import EmotionModelOutput
from mmemo.registry import register_loss_term
from mmemo.training.callbacks.moving_average import MovingAverage
from mmemo.training.loss_terms.base import LossTerm

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


@dataclass
class DistillationConfig(LossTermConfig):
    name: str = "distill"

    def check(self, config: Config, key: str) -> None:
        if not config.train.ema_decay:
            raise ConfigError(f"{key}: the teacher of distill is the moving average of the weights; set train.ema_decay")


@register_loss_term("distill", config=DistillationConfig)
class SelfDistillation(LossTerm):
    """Self-distillation: MSE between the logits and the moving average's (Xu et al. 2020)."""

    teacher: torch.nn.Module

    def setup(self, trainer: Trainer) -> None:
        self.teacher = trainer.callback(MovingAverage).module

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        teacher = self.teacher.eval()
        with torch.no_grad():
            target = teacher(batch["inputs"], batch["present"]).logits
        return F.mse_loss(outputs.logits.float(), target.float())
