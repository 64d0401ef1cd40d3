"""When checkpoints are written: ``checkpoints/last`` after every epoch and every ``train.checkpoint_every_steps``
optimiser steps (for resume), and ``best/`` whenever the selection metric improves (a saved model, whose model
card gives the selection split's metrics). How a checkpoint is written, atomically and without pickles, is the
trainer's (``save_checkpoint``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class Checkpointing(Callback):
    def __init__(self, every_steps: int | None = None):
        self.every_steps = every_steps

    def on_step_end(self, trainer: Trainer) -> None:
        if self.every_steps and trainer.state["global_step"] % self.every_steps == 0:
            trainer.save_checkpoint()

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["best"]:  # the model card carries the dev metrics it was selected with
            trainer.save_model(trainer.run_dir / "best", card={"metrics": {record["split"]: record}})

    def on_epoch_end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()
