"""openSMILE, the field's standard speech-feature extractor (audEERING), as an audio encoder: eGeMAPSv02
(88 functionals), ComParE_2016 (6,373) and the other sets the ``opensmile`` package ships, as one pooled
vector per clip (functionals) or a frame sequence (low-level descriptors, LLD), optionally standardised per
speaker, then optionally a BatchNorm, an MLP and a projection, as ``acoustic`` has.

openSMILE is free for research and education; commercial use needs a licence from audEERING. It is an
optional extra: ``pip install mmemo[opensmile]``.

The audio is what every audio encoder receives (``WaveformProcessor.load``: resampled to
``data.sample_rate``, cut at ``data.max_audio_seconds``, from files, video tracks or arrays); extraction
runs on that array (``Smile.process_signal``), in the processor, and is kept per file version. The
extractor has no weights, so with ``hidden: []``, ``dim: null`` and ``batch_norm: false`` the encoder has
nothing to train and counts as frozen: the embedding cache stores its output once.
"""

from __future__ import annotations

import functools
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example
from mmemo.data.media import MediaError, describe, file_identity, is_path
from mmemo.models.encoders.audio import SpeakerNorm, SpeakerNormProcessor
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, masked_mean, pad_stack
from mmemo.registry import register_encoder

INSTALL_HINT = "pip install mmemo[opensmile]"
LEVELS = {"functionals": "Functionals", "lld": "LowLevelDescriptors"}  # config value -> opensmile.FeatureLevel

# openSMILE fills a clip shorter than its first analysis frame with NaN and warns; the processor reports
# such a clip as a MediaError ("too short for openSMILE") instead, so the warning would only repeat it.
warnings.filterwarnings("ignore", message="Segment too short, filling with NaN", category=UserWarning)


@dataclass
class OpenSmileConfig(EncoderConfig):
    name: str = "opensmile"
    # any opensmile.FeatureSet name: ComParE_2016, eGeMAPSv02, GeMAPSv01b, emobase, IS09 ... IS13
    feature_set: str = "ComParE_2016"
    # functionals: one vector per clip (a one-token sequence); lld: the frame sequence (10 ms hop) with its mask
    level: Literal["functionals", "lld"] = "functionals"
    speaker_norm: bool = False  # standardise each feature with its speaker's own (unlabelled) statistics
    # a BatchNorm on the features (its running statistics a global z-score); false: they enter as they are,
    # which suits speaker_norm (already standardised) and a linear probe, where batch statistics are noise
    batch_norm: bool = True
    hidden: list[int] = field(default_factory=lambda: [256])  # widths of the MLP's hidden layers ([] for none)
    dim: int | None = 128  # None (with hidden: []): the (normalised) features themselves, for a linear probe
    dropout: float = 0.3  # dropout before each layer of the MLP


@functools.cache
def smile(feature_set: str, level: str) -> Any:
    """The ``opensmile.Smile`` extractor for a set and level (one per process: building one parses its config).
    It keeps no state between calls, so threads may share it."""
    try:
        import opensmile
    except ImportError as exc:
        raise ImportError(f"the opensmile encoder needs the opensmile package: {INSTALL_HINT}") from exc
    sets = list(opensmile.FeatureSet.__members__)
    if feature_set not in sets:
        raise ValueError(f"opensmile feature_set {feature_set!r} is not one of {', '.join(sets)}")
    if level not in LEVELS:
        raise ValueError(f"opensmile level {level!r} is not one of {', '.join(LEVELS)}")
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel[LEVELS[level]])


def opensmile_feature_names(feature_set: str, level: str) -> list[str]:
    """The names of the set's features at that level, in the order the encoder receives them."""
    return list(smile(feature_set, level).feature_names)


def opensmile_features(wav: np.ndarray, sample_rate: int, feature_set: str, level: str, source: object = "audio") -> np.ndarray:
    """float32 ``[F]`` functionals or ``[T, F]`` LLD frames of a mono waveform in [-1, 1].

    Raises ``MediaError`` (naming ``source``) for a clip shorter than openSMILE's first analysis frame and
    for non-finite features, so that such a clip is counted in the media report like any other failure.
    """
    # openSMILE turns the floats into 16-bit PCM by scaling alone: a sample at or past full scale would wrap.
    signal = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 32767 / 32768)
    values = smile(feature_set, level).process_signal(signal, sample_rate).to_numpy(dtype=np.float32)
    if values.size == 0 or np.isnan(values).all():  # no frame at all (openSMILE fills the clip's row with NaN)
        raise MediaError(describe(source), "too short for openSMILE",
                         f"{1000 * len(signal) / sample_rate:.0f} ms, shorter than its first analysis frame")
    if not np.isfinite(values).all():
        raise MediaError(describe(source), "openSMILE features not finite")
    return values[0] if level == "functionals" else values


class KeptFeatures:
    """Extracted features shared by every processor of this process, up to ``max_bytes`` (the oldest go
    first), keyed by the settings and the file's version: a leave-one-speaker-out loop or a sweep that
    builds a processor per run extracts each clip once. Arrays are stored read-only."""

    def __init__(self, max_bytes: int = 2 * 2**30):
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()  # processors extract in threads

    def __contains__(self, key: tuple) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> np.ndarray | None:
        return self._items.get(key)

    def put(self, key: tuple, value: np.ndarray) -> None:
        value.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes += value.nbytes - (old.nbytes if old is not None else 0)
            self._items[key] = value
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                self.nbytes -= self._items.pop(next(iter(self._items))).nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


KEPT = KeptFeatures()


class OpenSmileProcessor(SpeakerNormProcessor):
    """Waveform -> openSMILE features (``[F]``, or ``[T, F]`` for LLD), extracted once per file version and
    kept, optionally standardised with the clip's speaker's statistics."""

    def __init__(self, config: OpenSmileConfig, data: DataConfig | None):
        super().__init__(config, data)
        self.feature_names = opensmile_feature_names(config.feature_set, config.level)  # fails early without the package
        # eps 0: ComParE's features span many decades; an added constant would flatten the smallest ones
        self.speaker_norm = SpeakerNorm("opensmile", eps=0.0)

    def _key(self, path: str) -> tuple:
        return (self.config.feature_set, self.config.level, self.sample_rate, self.max_seconds, *file_identity(str(path)))

    def raw_features(self, example: Example) -> np.ndarray | None:
        """The clip's features before normalisation, extracted once per file version and settings in this
        process (in-memory inputs are not kept)."""
        if example.audio is None:
            return None
        key = self._key(example.audio) if is_path(example.audio) else None
        feats = KEPT.get(key) if key is not None else None
        if feats is None:
            wav = self.load(example)
            feats = opensmile_features(wav.numpy(), self.sample_rate, self.config.feature_set, self.config.level,
                                       example.audio)
            if key is not None:
                KEPT.put(key, feats)
        return feats

    def extract(self, examples: list[Example], workers: int | None = None, progress: bool | None = None) -> None:
        """Extract and keep the features of every clip not kept yet, ``workers`` at a time (default: the
        threads torch is given). openSMILE runs outside the GIL (a ctypes library), so threads use the
        cores; clips that fail are left for the dataset to report."""
        from tqdm.auto import tqdm

        todo = {}
        for ex in examples:
            if is_path(ex.audio) and (key := self._key(ex.audio)) not in KEPT:
                todo.setdefault(key, ex)

        def one(example: Example) -> None:
            try:
                self.raw_features(example)
            except MediaError:
                pass

        workers = workers or torch.get_num_threads()
        with ThreadPoolExecutor(max(1, workers)) as pool:
            bar = tqdm(pool.map(one, todo.values()), total=len(todo), leave=False,
                       desc=f"openSMILE {self.config.feature_set} {self.config.level}",
                       disable=None if progress is None else not progress)
            for _ in bar:
                pass

    def prefetch(self, examples: list[Example]) -> None:
        """Before fitting or enrolling: extract every clip's features in threads."""
        self.extract(examples)

    def n_features(self) -> int:
        return len(self.feature_names)

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        feats = self.raw_features(example)
        if feats is None:
            return None
        feats = self.normalised(feats, example)
        return {"features": torch.from_numpy(np.array(feats, dtype=np.float32))}  # a copy: the kept array stays as is

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.config.level == "functionals":
            return {"features": torch.stack([it["features"] for it in items])}
        features, mask = pad_stack([it["features"] for it in items])
        return {"features": features, "mask": mask}


@register_encoder("opensmile", config=OpenSmileConfig, modality="audio")
class OpenSmileEncoder(Encoder):
    """openSMILE features (eGeMAPS, ComParE...: functionals or LLD frames), normalised, then an MLP; with
    ``hidden: []``, ``dim: null`` and ``batch_norm: false``, the features themselves (a linear model with
    the ``probe`` fusion), and nothing to train."""

    modality = "audio"
    processor_class = OpenSmileProcessor

    def __init__(self, config: OpenSmileConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        n_features = len(opensmile_feature_names(config.feature_set, config.level))
        layers: list[nn.Module] = [nn.BatchNorm1d(n_features) if config.batch_norm else nn.Identity()]
        width = n_features
        for h in config.hidden:
            layers += [nn.Dropout(config.dropout), nn.Linear(width, h), nn.GELU()]
            width = h
        if config.dim is not None:
            layers += [nn.Dropout(config.dropout), nn.Linear(width, config.dim)]
            width = config.dim
        self.mlp = nn.Sequential(*layers)
        self.dim = width

    @property
    def is_frozen(self) -> bool:
        # No parameters (the bare features): a fixed function of the clip, which the embedding cache may store.
        return super().is_frozen or next(self.parameters(), None) is None

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> ModalityEmbedding:
        """``features`` ``[B, F]`` (functionals, a one-token sequence) or ``[B, T, F]`` with ``mask``
        ``[B, T]`` (LLD): each real frame goes through the same layers; ``pooled`` is their mean."""
        x = features.float()
        if mask is None:
            x, mask = x.unsqueeze(1), torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)
        frames = self._layers(x[mask])  # [N, D]: padding never enters the BatchNorm's statistics
        seq = frames.new_zeros(*mask.shape, frames.shape[-1])
        seq[mask] = frames
        return ModalityEmbedding(seq, mask, masked_mean(seq, mask))

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.mlp[0]
        # a last batch of one clip (functionals) has no batch statistics: use the running ones
        if self.training and x.shape[0] == 1 and isinstance(norm, nn.BatchNorm1d):
            x = nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
            return self.mlp[1:](x)
        return self.mlp(x)
