"""Fusion methods, one file per family, all behind the contract in ``base.py``."""

from mmemo.models.fusion import (  # noqa: F401  (each module registers its fusion)
    bottleneck,
    concat,
    cross_attention,
    gated,
    late,
    low_rank,
    probe,
    tensor,
)
from mmemo.models.fusion.base import Fusion

__all__ = ["Fusion"]
