"""Data: readers produce Examples; EmotionDataset decodes them lazily through processors."""

from mmemo.data.examples import Example, Splits, Turn

__all__ = ["Example", "Splits", "Turn"]
