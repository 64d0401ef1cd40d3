"""Models: per-modality encoders, fusion methods, and the EmotionModel that joins them."""

from mmemo.models import encoders, fusion  # noqa: F401  (the registries of encoders and fusions fill up)
from mmemo.models.model import EmotionModel, EmotionModelOutput

__all__ = ["EmotionModel", "EmotionModelOutput"]
