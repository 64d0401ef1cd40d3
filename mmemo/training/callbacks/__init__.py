"""Training callbacks: every optional behaviour of the loop is one (``base.py`` has the protocol), each in its
own file. ``build_callbacks`` makes the ones a config asks for; ``Trainer(..., callbacks=[...])`` adds others."""

from __future__ import annotations

from mmemo.config import Config
from mmemo.training.callbacks.adversarial import AdversarialTraining, FastGradientMethod
from mmemo.training.callbacks.base import Callback
from mmemo.training.callbacks.checkpointing import Checkpointing
from mmemo.training.callbacks.early_stopping import EarlyStopping
from mmemo.training.callbacks.head_only import HeadOnlyPhase
from mmemo.training.callbacks.metrics_log import MetricsLog
from mmemo.training.callbacks.moving_average import MovingAverage
from mmemo.training.callbacks.nonfinite import NonFiniteLossGuard
from mmemo.training.callbacks.tensorboard import TensorBoardLog


def build_callbacks(config: Config) -> list[Callback]:
    """The callbacks ``config.train`` asks for, in the order the trainer calls them."""
    t = config.train
    callbacks: list[Callback] = [NonFiniteLossGuard()]
    if t.head_only_epochs:
        callbacks.append(HeadOnlyPhase(t.head_only_epochs))
    if t.adversarial_epsilon:
        callbacks.append(AdversarialTraining(t.adversarial_epsilon))
    if t.ema_decay:
        callbacks.append(MovingAverage(t.ema_decay))
    callbacks += [MetricsLog(), TensorBoardLog(t.log_every_steps)]
    if t.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(t.early_stopping_patience))
    callbacks.append(Checkpointing(t.checkpoint_every_steps))
    return callbacks


__all__ = ["AdversarialTraining", "Callback", "Checkpointing", "EarlyStopping", "FastGradientMethod", "HeadOnlyPhase",
           "MetricsLog", "MovingAverage", "NonFiniteLossGuard", "TensorBoardLog", "build_callbacks"]
