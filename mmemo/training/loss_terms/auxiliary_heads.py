"""The auxiliary heads' cross-entropy: each head of ``model.aux_labels`` (a second task such as MELD's sentiment,
or an auxiliary corpus's own labels, ``data.auxiliary``) learns its targets, which shapes the fused embedding the
emotion head reads. On, at weight 0.5, whenever the model has such heads."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmemo.config import LossTermConfig
from mmemo.data.examples import Example
from mmemo.errors import DataError
from mmemo.labels import IGNORE
from mmemo.models.model import EmotionModelOutput
from mmemo.registry import register_loss_term
from mmemo.training.loss_terms.base import LossTerm
from mmemo.training.losses import cross_entropy

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


@dataclass
class AuxiliaryHeadsConfig(LossTermConfig):
    name: str = "aux_heads"
    weight: float = 0.5


def aux_label_indices(aux_labels: dict[str, list[str]], examples: list[Example],
                      corpora: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Class index of each example for each extra target, read from ``example.meta[name]`` (case-insensitive).

    A head of an auxiliary corpus (``corpora``, from ``data.auxiliary``) has a target on that corpus's examples
    only, and every other head on the main corpus's only; the rest get IGNORE, which the loss skips.
    """
    out = {}
    for name, classes in aux_labels.items():
        index = {c.strip().lower(): i for i, c in enumerate(classes)}
        owner = name if name in corpora else None  # the corpus whose examples carry this target (None: the main one)
        targets = []
        for ex in examples:
            if ex.meta.get("corpus") != owner:
                targets.append(IGNORE)
                continue
            value = ex.meta.get(name)
            key = str(value).strip().lower() if value is not None else None
            if key not in index:
                raise DataError(f"{ex.meta.get('source', ex.id)}: model.aux_labels.{name}: "
                                f"{'no ' + name + ' field' if value is None else repr(value)}; expected one of {list(classes)}")
            targets.append(index[key])
        out[name] = torch.tensor(targets, dtype=torch.long)
    return out


@register_loss_term("aux_heads", config=AuxiliaryHeadsConfig)
class AuxiliaryHeads(LossTerm):
    """Cross-entropy of each auxiliary head (model.aux_labels) on its own targets."""

    targets: dict[str, torch.Tensor]
    label_smoothing: float = 0.0

    def setup(self, trainer: Trainer) -> None:
        config = trainer.config
        self.targets = aux_label_indices(config.model.aux_labels, trainer.splits["train"], config.data.auxiliary)
        self.label_smoothing = config.train.label_smoothing

    def __call__(self, batch: dict[str, Any], outputs: EmotionModelOutput, model: torch.nn.Module) -> torch.Tensor:
        rows = batch["index"].cpu()
        total = outputs.logits.new_zeros((), dtype=torch.float32)
        for name, logits in outputs.aux_logits.items():
            target = self.targets[name][rows].to(logits.device)
            total = total + cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        return total
