"""Models: per-modality encoders, fusion methods, and the EmotionModel that joins them."""

from mmemo.models.model import EmotionModel, EmotionModelOutput

__all__ = ["EmotionModel", "EmotionModelOutput"]
