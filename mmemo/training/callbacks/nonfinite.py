"""A guard on the loss: a NaN or infinite loss (in any process) stops training before it reaches the weights
or a checkpoint, naming the step and the last good checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mmemo.errors import NonFiniteLossError
from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class NonFiniteLossGuard(Callback):
    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> None:
        acc = trainer.accelerator
        finite = torch.isfinite(loss.detach()).float()
        if acc.num_processes > 1:
            finite = acc.reduce(finite, reduction="min")
        if bool(finite):
            return
        last = trainer.last_checkpoint()
        kept = (f"the last good checkpoint is {last}" if last is not None
                else "no checkpoint had been written yet (see train.checkpoint_every_steps)")
        state = trainer.state
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {state['global_step'] + 1} (epoch {state['epoch'] + 1}, batch "
            f"{state['batches_in_epoch'] + 1}); training stopped, {kept}")
