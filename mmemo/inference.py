"""EmotionRecognizer: fused inference on new inputs, any subset of modalities, from a saved model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmemo.config import Config
from mmemo.data.dataset import Collator
from mmemo.data.examples import Example, Turn
from mmemo.data.media import MediaError
from mmemo.labels import LabelSet
from mmemo.models.model import EmotionModel

log = logging.getLogger("mmemo")


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]
    modalities: list[str]  # the modalities the prediction used
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probs": self.probs, "modalities": self.modalities, "warnings": self.warnings}


class EmotionRecognizer:
    """Processors + model, ready for ``predict``; load with ``from_pretrained(run_or_model_dir)``."""

    def __init__(self, model: EmotionModel, config: Config, label_set: LabelSet, model_dir: Path | None = None,
                 device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = config
        self.label_set = label_set
        self.modalities = list(model.modalities)
        self.processors = {
            m: type(enc).build_processor(config.model.encoders[m], config.data, model_dir) for m, enc in model.encoders.items()
        }
        self.collator = Collator(self.processors)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, allow_pickle: bool = False) -> EmotionRecognizer:
        path = Path(path)
        if (path / "best" / "config.yaml").exists():  # a run folder: use its dev-selected model
            path = path / "best"
        model, config, label_set = EmotionModel.from_pretrained(path, allow_pickle=allow_pickle)
        return cls(model, config, label_set, path, device)

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.names)

    def _example(self, text=None, audio=None, video=None, image=None, context=None) -> Example:
        if audio is None and video is not None and "audio" in self.modalities:
            audio = video  # a video's own audio track, unless audio is given separately
        turns = tuple(Turn(None, c) if isinstance(c, str) else Turn(*c) for c in (context or ()))
        return Example(id="input", text=text, audio=audio, video=video, image=image, context_before=turns)

    def _inputs(self, example: Example) -> tuple[dict[str, Any], list[str]]:
        inputs, warnings = {}, []
        for m, processor in self.processors.items():
            try:
                inputs[m] = processor(example)
            except MediaError as err:
                inputs[m] = None
                warnings.append(f"{m} dropped: {err}")
        return inputs, warnings

    @torch.inference_mode()
    def predict(self, text: str | None = None, audio: Any = None, video: Any = None, image: Any = None,
                context: list | None = None) -> Prediction:
        """Predict from any subset of the model's modalities; an unusable input is dropped with a warning."""
        example = self._example(text, audio, video, image, context)
        inputs, warnings = self._inputs(example)
        used = [m for m in self.modalities if inputs.get(m) is not None]
        if not used:
            detail = "; ".join(warnings) or f"give at least one of: {', '.join(self.modalities)}"
            raise ValueError(f"no usable input for this model ({detail})")
        for w in warnings:
            log.warning(w)
        batch = self.collator([{"index": 0, "id": "input", "label": -1, "inputs": inputs, "issues": []}])
        batch = _to_device(batch, self.device)
        out = self.model(batch["inputs"], batch["present"])
        probs = out.probs[0].float().cpu()
        return Prediction(
            label=self.label_set.names[int(probs.argmax())],
            probs={name: round(float(p), 6) for name, p in zip(self.label_set.names, probs)},
            modalities=used,
            warnings=warnings,
        )


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
