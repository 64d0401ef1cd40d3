"""The one prediction loop: batches in, the model's outputs out, in eval mode, without gradients, on the
model's device, with mixed precision when asked. Training-time evaluation, ``mmemo evaluate`` and
``EmotionRecognizer.predict_batch`` all run it, so a model scores an input the same way everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from mmemo.models.model import EmotionModelOutput


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Tensors (and ``ModalityEmbedding``s, which have ``.to``) of a batch on ``device``, through dicts."""
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if hasattr(obj, "to") and not isinstance(obj, type):
        return obj.to(device)
    return obj


def predict_batches(model: torch.nn.Module, batches: Iterable[dict[str, Any]], device: torch.device | str | None = None,
                    autocast: Callable[[], AbstractContextManager] = nullcontext
                    ) -> Iterator[tuple[dict[str, Any], EmotionModelOutput]]:
    """``(batch, outputs)`` for each collated batch (``Collator``); ``device`` None leaves the batches where they
    are (an Accelerate-prepared loader places them). The model's train/eval mode is restored afterwards."""
    was_training = model.training
    if was_training:  # a recognizer's model is in eval mode already: walking its modules costs a few ms a call
        model.eval()
    try:
        for batch in batches:
            if device is not None:
                batch = {**batch, "inputs": to_device(batch["inputs"], device), "present": batch["present"].to(device)}
            with torch.inference_mode(), autocast():
                outputs = model(batch["inputs"], batch["present"])
            yield batch, outputs
    finally:
        if was_training:
            model.train()
