"""Training: the Trainer (Accelerate), losses and metrics."""

from mmemo.training.trainer import NonFiniteLossError, Trainer, TrainResult, evaluate, train

__all__ = ["Trainer", "TrainResult", "train", "evaluate", "NonFiniteLossError"]
