"""The loss-term protocol: a term joins the main loss as ``weight * term(batch, outputs, model)``.

A term is registered by name with its config dataclass (``@register_loss_term("supcon", config=...)``), listed
in ``train.loss_terms`` with its weight and options, and validates its own options (the dataclass's
``validate``; ``check`` for what depends on the rest of the config). Adding one is one file here and its import
in ``__init__.py``. ``setup`` sees the trainer once (targets from the training split, a teacher); ``prepare``
may rewrite the batch before the forward pass (R-Drop sends it through twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mmemo.config import LossTermConfig
from mmemo.models.model import EmotionModelOutput

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class LossTerm:
    def __init__(self, config: LossTermConfig):
        self.config = config

    @property
    def weight(self) -> float:
        return self.config.weight

    def setup(self, trainer: Trainer) -> None: ...

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        raise NotImplementedError
