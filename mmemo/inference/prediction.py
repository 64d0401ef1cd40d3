"""``Prediction``: what predict returns, in Python and as JSON alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prediction:
    """One input's prediction. ``contributions[m]`` is p(label) with every input minus p(label) with
    modality ``m`` marked absent (positive: ``m`` pushed towards the label); it is given for each used
    modality when at least two were used. In ``predict_batch`` an input with no usable modality gets
    ``label=None`` and ``error`` instead of stopping the batch.

    ``top_k``: the classes by probability, highest first, as ``{"label", "score"}`` dicts (the shape
    transformers pipelines return); every class unless ``predict(..., top_k=k)`` asked for fewer."""

    label: str | None
    probs: dict[str, float]
    modalities: list[str]  # the modalities the prediction used
    contributions: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    id: str | None = None
    error: str | None = None
    top_k: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.top_k is None:
            self.top_k = ranked(self.probs)

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "probs": {k: round(v, digits) for k, v in self.probs.items()},
            "top_k": [{"label": t["label"], "score": round(t["score"], digits)} for t in self.top_k],
            "modalities": self.modalities,
            "contributions": {k: round(v, digits) for k, v in self.contributions.items()},
            "warnings": self.warnings,
            "error": self.error,
        }


def ranked(probs: dict[str, float], k: int | None = None) -> list[dict[str, Any]]:
    """``[{"label", "score"}]`` by score, highest first (ties keep the label order); the first ``k`` only when given."""
    if k is not None and k < 1:
        raise ValueError(f"top_k: expected a positive number of classes, got {k}")
    order = sorted(probs.items(), key=lambda kv: -kv[1])
    return [{"label": name, "score": score} for name, score in order[:k]]


# The columns ``prediction_columns`` makes, in order: what ``ds.map(recognizer, batched=True)`` adds to a dataset,
# and what Ray scoring writes.
PREDICTION_COLUMNS = ("pred_label", "pred_score", "pred_probs", "pred_modalities", "pred_warnings", "pred_error")


def prediction_columns(preds: list[Prediction], labels: list[str]) -> dict[str, list[Any]]:
    """Predictions as columns of plain values (Arrow- and Parquet-friendly), one row per prediction, in order:
    ``pred_label``, ``pred_score`` (its probability), ``pred_probs`` (every class, in ``labels`` order),
    ``pred_modalities``, ``pred_warnings`` and ``pred_error`` (None unless no input was usable). Prefixed, so
    that they sit beside a dataset's own ``label`` column."""
    return {
        "pred_label": [p.label for p in preds],
        "pred_score": [p.probs[p.label] if p.label is not None else None for p in preds],
        "pred_probs": [[p.probs[name] for name in labels] if p.probs else None for p in preds],
        "pred_modalities": [list(p.modalities) for p in preds],
        "pred_warnings": [list(p.warnings) for p in preds],
        "pred_error": [p.error for p in preds],
    }
