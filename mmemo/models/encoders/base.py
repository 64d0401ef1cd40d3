"""What every modality shares: the embedding an encoder returns, and the Processor/Encoder contracts."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example, Splits
from mmemo.errors import CheckpointError


@dataclass
class ModalityEmbedding:
    """One modality's output for a batch: a token sequence with its mask, and one pooled vector."""

    seq: torch.Tensor  # [B, T, D]
    mask: torch.Tensor  # [B, T] bool, True where a token is real
    pooled: torch.Tensor  # [B, D]

    @property
    def dim(self) -> int:
        return self.pooled.shape[-1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ModalityEmbedding:
        """Move to a device (what Accelerate calls on every batch item); dtypes are kept."""
        return ModalityEmbedding(*(t.to(device, non_blocking=non_blocking) for t in (self.seq, self.mask, self.pooled)))

    def scatter(self, rows: torch.Tensor, batch_size: int) -> ModalityEmbedding:
        """Place the embeddings of the examples that have this modality at their rows of the full batch;
        the other rows get zeros and an all-false mask."""
        if rows.numel() == batch_size and bool((rows == torch.arange(batch_size, device=rows.device)).all()):
            return self
        seq = self.seq.new_zeros((batch_size, *self.seq.shape[1:]))
        mask = self.mask.new_zeros((batch_size, self.mask.shape[1]))
        pooled = self.pooled.new_zeros((batch_size, self.pooled.shape[1]))
        seq[rows], mask[rows], pooled[rows] = self.seq, self.mask, self.pooled
        return ModalityEmbedding(seq, mask, pooled)

    @staticmethod
    def empty(batch_size: int, dim: int, device: torch.device, dtype: torch.dtype = torch.float32) -> ModalityEmbedding:
        return ModalityEmbedding(
            torch.zeros(batch_size, 1, dim, device=device, dtype=dtype),
            torch.zeros(batch_size, 1, dtype=torch.bool, device=device),
            torch.zeros(batch_size, dim, device=device, dtype=dtype),
        )


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``x[B, T, D]`` where ``mask[B, T]``; rows with no token give zeros."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def pad_stack(tensors: list[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors along dim 0 to the longest; returns ``(batch[B, T, ...], mask[B, T])``."""
    lengths = [t.shape[0] for t in tensors]
    longest = max(lengths)
    out = tensors[0].new_full((len(tensors), longest, *tensors[0].shape[1:]), pad_value)
    mask = torch.zeros(len(tensors), longest, dtype=torch.bool)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return out, mask


class Processor:
    """Turns one raw example field into tensors (in DataLoader workers), and pads a batch of them.

    ``__call__`` returns ``None`` when the example lacks the modality and raises ``MediaError`` when
    the input exists but cannot be used; the dataset records the latter and marks the modality absent.
    Its dict may carry ``notes``, a list of strings for the user (e.g. a face stage's fallback): the
    dataset removes them before ``collate``, and ``predict`` adds them to ``Prediction.warnings``.
    """

    modality: ClassVar[str]

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        raise NotImplementedError

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parts(self) -> tuple[object, ...]:
        """Helpers that shape the output beyond the processor's own code (the face stage): the source of
        their classes joins a cached embedding's fingerprint, as the processor's does."""
        return ()

    def fit(self, examples: list[Example]) -> None:
        """Learn statistics from unlabelled inputs before training (e.g. per-speaker normalisation);
        most processors need none. Called through ``fit_processors``, which hides the labels."""

    def fitted_state(self) -> Any:
        """What ``fit`` learnt, in a JSON-able or tensor form: part of a cached embedding's fingerprint,
        so that refitting on other data never reuses embeddings made with the old statistics."""
        return None

    # -- fitted state saved with the model, and enrolment of new speakers ----------------------------
    @property
    def learns(self) -> bool:
        """Whether ``fit`` learns anything with these settings (then its state is saved with the model and
        new speakers can be enrolled)."""
        return False

    def fitted_tensors(self, speakers: Iterable[str] | None = None) -> FittedTensors | None:
        """What ``fit`` and ``enroll`` learnt, as named tensors and JSON-able metadata, for the model folder's
        safetensors file; ``speakers`` keeps only those (an enrolment file); None when nothing was learnt."""
        return None

    def load_fitted_tensors(self, state: FittedTensors, source: str) -> None:
        """Restore what ``fitted_tensors`` gave (per-speaker entries are added to or replace those held);
        ``source`` names the file in errors."""
        raise CheckpointError(f"{source}: the {self.modality} processor keeps no fitted state")

    def enroll(self, speaker: str, examples: list[Example]) -> list[tuple[Example, str]]:
        """Learn one more speaker from their unlabelled inputs, keeping every other speaker; returns the inputs
        that could not be used, each with the reason."""
        raise NotImplementedError(f"{type(self).__name__} learns nothing per speaker")

    def speakers(self) -> list[str]:
        """The speakers with statistics of their own (fitted or enrolled)."""
        return []

    def notes(self, example: Example) -> list[str]:
        """What the user should be told about how this input was processed (say, an unknown speaker
        normalised with the global statistics); predictions carry them as warnings."""
        return []


@dataclass
class FittedTensors:
    """A processor's fitted state as the saved model keeps it: tensors for safetensors, and JSON-able
    metadata (speaker names, settings) beside them; nothing is ever pickled."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def fit_processors(processors: dict[str, Processor], splits: Splits) -> None:
    """Let each processor that learns from inputs see every split's examples, with labels removed."""
    learners = [p for p in processors.values() if type(p).fit is not Processor.fit]
    if learners:
        unlabelled = [dataclasses.replace(ex, label=None) for name in splits.names() for ex in splits[name]]
        for processor in learners:
            processor.fit(unlabelled)


class Encoder(nn.Module):
    """``forward(**inputs) -> ModalityEmbedding``; ``dim`` is the embedding size.

    Parameters of the (pre-trained) backbone are ``backbone_parameters``; everything added on top
    (projections, temporal pooling) trains at the head learning rate.
    """

    modality: ClassVar[str]
    processor_class: ClassVar[type[Processor]]
    registry_name: ClassVar[str]

    def __init__(self, config: EncoderConfig, base_dir: str | Path | None = None):
        super().__init__()
        self.config = config
        self.base_dir = base_dir  # the saved model's folder, against which relative asset paths resolve
        self.dim: int = 0

    # -- processors and assets ------------------------------------------------------------------
    @classmethod
    def build_processor(cls, config: EncoderConfig, data: DataConfig | None, base_dir: str | Path | None = None) -> Processor:
        return cls.processor_class(config, data)

    def save_assets(self, directory: Path, relative: str) -> dict[str, Any]:
        """Write what rebuilding this encoder needs besides its weights into ``directory`` (known to the
        saved model as ``relative``); return the config updates that point there."""
        return {}

    # -- training ---------------------------------------------------------------------------------
    def backbone(self) -> nn.Module | None:
        return None

    def token_embeddings(self) -> nn.Parameter | None:
        """The trainable embedding matrix of discrete input tokens, which ``train.adversarial_epsilon``
        perturbs; ``None`` for encoders of continuous inputs (audio, images)."""
        return None

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        bb = self.backbone()
        return iter(()) if bb is None else (p for p in bb.parameters() if p.requires_grad)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        bb = self.backbone()
        skip = set() if bb is None else {id(p) for p in bb.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in skip)

    def parameter_groups(self, lr: float, encoder_lr: float, layer_decay: float = 1.0) -> list[dict]:
        groups = [
            {"params": list(self.backbone_parameters()), "lr": encoder_lr, "name": f"{self.modality}.backbone"},
            {"params": list(self.head_parameters()), "lr": lr, "name": f"{self.modality}.head"},
        ]
        return [g for g in groups if g["params"]]

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.frozen = True
        self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(True)
        self.frozen = False

    def hold(self, held: bool = True) -> None:
        """Pause training without touching ``requires_grad``: the forward builds no graph and runs in eval
        mode, so the optimiser skips the parameters (their gradients stay None). For a head-only phase."""
        self.held = held

    @property
    def is_frozen(self) -> bool:
        return getattr(self, "frozen", False) or getattr(self, "held", False)

    def train(self, mode: bool = True) -> Encoder:
        # A frozen encoder stays in eval mode: no dropout noise, no BatchNorm statistics drift.
        return super().train(mode and not self.is_frozen)
