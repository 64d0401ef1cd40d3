"""Training: the Trainer (Accelerate), its callbacks and loss terms, losses, metrics, checkpoints, the embedding
cache."""

from mmemo.training.evaluate import evaluate
from mmemo.training.trainer import Trainer, TrainResult, train

__all__ = ["Trainer", "TrainResult", "train", "evaluate"]
