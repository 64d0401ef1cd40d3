"""R-Drop (Liang et al., NeurIPS 2021): each batch goes through the model twice under different dropout, and the
symmetric KL divergence between the two predictions joins the loss. Twice the compute.

The two passes are one forward over the batch stacked on itself: each copy gets its own dropout masks, there is
one backward pass, and distributed training sees a single forward. The main loss over both copies is the mean
of the two losses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmemo.config import LossTermConfig
from mmemo.models.model import EmotionModelOutput
from mmemo.registry import register_loss_term
from mmemo.training.loss_terms.base import LossTerm


@dataclass
class RDropConfig(LossTermConfig):
    name: str = "rdrop"


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """``(KL(p_a || p_b) + KL(p_b || p_a)) / 2``, summed over classes and averaged over rows (R-Drop's term)."""
    log_a, log_b = F.log_softmax(logits_a.float(), -1), F.log_softmax(logits_b.float(), -1)
    return 0.5 * (F.kl_div(log_b, log_a, reduction="batchmean", log_target=True)
                  + F.kl_div(log_a, log_b, reduction="batchmean", log_target=True))


def stack_twice(batch: Any) -> Any:
    """The batch followed by itself along dim 0, through dicts, lists and dataclasses (e.g. cached embeddings)."""
    if isinstance(batch, torch.Tensor):
        return torch.cat([batch, batch])
    if isinstance(batch, Mapping):
        return type(batch)({k: stack_twice(v) for k, v in batch.items()})
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: stack_twice(getattr(batch, f.name)) for f in dataclasses.fields(batch)})
    if isinstance(batch, (list, tuple)):
        return type(batch)(list(batch) + list(batch))
    return batch


@register_loss_term("rdrop", config=RDropConfig)
class RDrop(LossTerm):
    """R-Drop: the symmetric KL between two dropout samples of the same batch (Liang et al. 2021)."""

    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        return stack_twice({k: batch[k] for k in ("inputs", "present", "labels", "index")}) | {
            k: v for k, v in batch.items() if k not in ("inputs", "present", "labels", "index")}

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        return symmetric_kl(*outputs.logits.chunk(2))
