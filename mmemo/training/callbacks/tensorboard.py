"""TensorBoard logs in ``RUN/tb``: the running training loss and every parameter group's learning rate every
``train.log_every_steps`` steps, and the selection split's metrics after each evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmemo.training.callbacks.base import Callback

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class TensorBoardLog(Callback):
    def __init__(self, every_steps: int = 20):
        self.every_steps = every_steps
        self.writer = None

    def setup(self, trainer: Trainer) -> None:
        if trainer.accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.run_dir / "tb"))

    def on_step_end(self, trainer: Trainer) -> None:
        step = trainer.state["global_step"]
        if self.writer is None or step % self.every_steps:
            return
        self.writer.add_scalar("train/loss", trainer.running_loss, step)
        for g in trainer.optimizer.param_groups:
            self.writer.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], step)

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = trainer.state["global_step"]
        self.writer.add_scalar("train/epoch_loss", record["train_loss"], step)
        for k in ("accuracy", "weighted_f1", "macro_f1", "uar"):
            self.writer.add_scalar(f"{record['split']}/{k}", record[k], step)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
