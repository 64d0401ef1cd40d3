"""``Prediction``: what predict returns, in Python and as JSON alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prediction:
    """One input's prediction. ``contributions[m]`` is p(label) with every input minus p(label) with
    modality ``m`` marked absent (positive: ``m`` pushed towards the label); it is given for each used
    modality when at least two were used. In ``predict_batch`` an input with no usable modality gets
    ``label=None`` and ``error`` instead of stopping the batch."""

    label: str | None
    probs: dict[str, float]
    modalities: list[str]  # the modalities the prediction used
    contributions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    id: str | None = None
    error: str | None = None

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "probs": {k: round(v, digits) for k, v in self.probs.items()},
            "modalities": self.modalities,
            "contributions": {k: round(v, digits) for k, v in self.contributions.items()},
            "warnings": self.warnings,
            "error": self.error,
        }
