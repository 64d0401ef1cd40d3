"""A head-only phase before fine-tuning (``train.head_only_epochs``; LP-FT, Kumar et al., ICLR 2022): the first
epochs train only the fusion module and the head, on the encoders' features, which then move less than
fine-tuning under a random head moves them.

While held, an encoder runs in eval mode without a graph, so the optimiser skips its parameters; its learning
rate schedule (warmup, then decay) starts when it starts training, with the same shape as without the phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmemo.training.callbacks.base import Callback
from mmemo.training.schedule import build_scheduler

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class HeadOnlyPhase(Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs
        self.steps = 0

    def setup(self, trainer: Trainer) -> None:
        if trainer.accelerator.num_processes > 1:
            raise ValueError("train.head_only_epochs is not supported in a distributed run yet: "
                             "the encoders' parameters would get no gradient on some steps")
        t = trainer.config.train
        self.steps = trainer.steps_per_epoch * self.epochs
        in_encoders = {id(p) for p in trainer.unwrapped.encoders.parameters()}
        held_groups = {g["name"] for g in trainer.optimizer.param_groups if id(g["params"][0]) in in_encoders}
        trainer.scheduler = build_scheduler(trainer.optimizer, t.scheduler, t.warmup_ratio, trainer.total_steps,
                                            min(self.steps, trainer.total_steps - 1), held_groups)

    def _hold(self, trainer: Trainer) -> None:
        held = trainer.state["global_step"] < self.steps
        for m, enc in trainer.unwrapped.encoders.items():
            if not trainer.config.model.encoders[m].freeze:
                enc.hold(held)
                enc.train(trainer.model.training)

    def on_epoch_start(self, trainer: Trainer) -> None:
        self._hold(trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state["global_step"] == self.steps:
            self._hold(trainer)
