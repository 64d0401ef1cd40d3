"""An exponential moving average of the weights (``train.ema_decay``), which is what is evaluated, selected and
saved: PyTorch's ``AveragedModel``, as Lightning's weight-averaging callback wraps it.

The average is updated after every optimiser step. For an evaluation (and the saving of the selected model
that follows it) the model's weights and the average's are swapped, and swapped back after, so the trainer
evaluates and saves whatever its model holds, with no notion of an average.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class MovingAverage(Callback):
    name = "moving_average"

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"moving average: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average: AveragedModel | None = None

    def setup(self, trainer: Trainer) -> None:
        self.average = AveragedModel(trainer.unwrapped, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    @property
    def module(self) -> torch.nn.Module:
        """The averaged model (a teacher for self-distillation)."""
        return self.average.module

    def on_step_end(self, trainer: Trainer) -> None:
        self.average.update_parameters(trainer.unwrapped)

    def on_evaluate_start(self, trainer: Trainer) -> None:
        self._swap(trainer.unwrapped)

    def on_evaluate_end(self, trainer: Trainer) -> None:
        self._swap(trainer.unwrapped)

    @torch.no_grad()
    def _swap(self, model: torch.nn.Module) -> None:
        live = model.state_dict(keep_vars=True)
        for key, averaged in self.average.module.state_dict(keep_vars=True).items():
            held = live[key].detach().clone()
            live[key].data.copy_(averaged.detach())
            averaged.data.copy_(held)

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)
