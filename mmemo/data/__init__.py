"""Data: readers produce Examples; EmotionDataset decodes them lazily through processors."""

from mmemo.data import readers  # noqa: F401  (the reader registry fills up)
from mmemo.data.examples import Example, Splits, Turn

__all__ = ["Example", "Splits", "Turn"]
