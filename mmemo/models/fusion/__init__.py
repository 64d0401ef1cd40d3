"""Fusion methods, one file per family, all behind the contract in ``base.py``."""

from mmemo.models.fusion import concat  # noqa: F401  (registers)
from mmemo.models.fusion.base import Fusion

__all__ = ["Fusion"]
