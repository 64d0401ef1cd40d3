"""Early stopping (``train.early_stopping_patience``): training stops after that many evaluations without a
better selection metric. A resumed run that had stopped stays stopped."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer

log = logging.getLogger("mmemo")


class EarlyStopping(Callback):
    name = "early_stopping"

    def __init__(self, patience: int):
        self.patience = patience
        self.bad_epochs = 0

    def on_train_start(self, trainer: Trainer) -> None:
        if self.bad_epochs >= self.patience:
            trainer.should_stop = True

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bad_epochs = 0 if record["best"] else self.bad_epochs + 1
        if self.bad_epochs >= self.patience:
            trainer.should_stop = True
            if trainer.accelerator.is_main_process:
                t = trainer.config.train
                trainer.print(f"early stopping: no {t.metric} gain on {t.select_on} for {self.bad_epochs} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])
