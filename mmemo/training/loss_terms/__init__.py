"""Loss terms that join the main loss (``train.loss_terms``), one registered file each; ``base.py`` has the
protocol."""

from __future__ import annotations

from mmemo.config import Config, from_dict
from mmemo.registry import LOSS_TERMS
from mmemo.training.loss_terms import auxiliary_heads, distillation, l2_penalty, rdrop, supcon  # noqa: F401
from mmemo.training.loss_terms.auxiliary_heads import AuxiliaryHeadsConfig, aux_label_indices
from mmemo.training.loss_terms.base import LossTerm


def build_loss_terms(config: Config, has_aux_heads: bool = False) -> list[LossTerm]:
    """The terms of ``train.loss_terms``; the auxiliary heads' term joins (at its default weight) when the model
    has auxiliary heads and the list does not name it."""
    configs = list(config.train.loss_terms)
    if has_aux_heads and not any(isinstance(c, AuxiliaryHeadsConfig) for c in configs):
        configs.append(from_dict(AuxiliaryHeadsConfig, {}))
    return [LOSS_TERMS.get(c.name).obj(c) for c in configs]


__all__ = ["LossTerm", "aux_label_indices", "build_loss_terms"]
