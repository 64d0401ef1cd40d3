"""Audio: a log-mel CNN trained from scratch, utterance-level acoustic functionals (librosa) with an MLP,
or any transformers speech model (wav2vec2, HuBERT, WavLM).

All decode through ``mmemo.data.media.load_audio`` (mono, the configured sample rate); a silent
track counts as absent, not as a very quiet signal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example
from mmemo.data.media import MediaError, describe, file_identity, is_path, is_silent, read_audio
from mmemo.errors import CheckpointError
from mmemo.models.encoders.base import (
    Encoder,
    FittedTensors,
    ModalityEmbedding,
    Processor,
    masked_mean,
    pad_stack,
)
from mmemo.models.encoders.hf import load_hf_model, resolve_checkpoint
from mmemo.registry import register_encoder


class WaveformProcessor(Processor):
    """A path or an in-memory ``(array, sample_rate)`` -> mono float32 waveform at the configured rate."""

    modality = "audio"

    def __init__(self, config: EncoderConfig, data: DataConfig | None):
        self.config = config
        self.sample_rate = data.sample_rate if data else 16000
        self.max_seconds = data.max_audio_seconds if data else 10.0

    def load(self, example: Example) -> torch.Tensor | None:
        if example.audio is None:
            return None
        wav = read_audio(example.audio, self.sample_rate, self.max_seconds)
        if is_silent(wav):
            raise MediaError(describe(example.audio), "silent audio")
        return wav

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        wav = self.load(example)
        return None if wav is None else {"waveform": wav}

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        waveform, mask = pad_stack([it["waveform"] for it in items])
        return {"waveform": waveform, "attention_mask": mask}


# --------------------------------------------------------------------------------------------------
# Log-mel CNN
# --------------------------------------------------------------------------------------------------


@dataclass
class LogMelCNNConfig(EncoderConfig):
    name: str = "logmel_cnn"
    n_mels: int = 64  # mel bands of the spectrogram
    win_ms: float = 25.0  # analysis window, milliseconds
    hop_ms: float = 10.0  # hop between frames, milliseconds
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])  # output channels of each conv block (each halves time and frequency)
    dim: int = 128  # width of the embedding
    dropout: float = 0.1  # dropout before the projection


class LogMelProcessor(WaveformProcessor):
    """Waveform -> log-mel frames ``[T, n_mels]``, computed in the DataLoader worker."""

    def __init__(self, config: LogMelCNNConfig, data: DataConfig | None):
        super().__init__(config, data)
        import torchaudio

        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=int(round(self.sample_rate * config.win_ms / 1000)),
            hop_length=int(round(self.sample_rate * config.hop_ms / 1000)),
            n_mels=config.n_mels,
        )

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        wav = self.load(example)
        if wav is None:
            return None
        return {"features": self.features(wav)}

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mel = self.melspec(wav)  # [n_mels, T]
        # A fixed affine map (no per-utterance normalisation): loudness is an emotional cue to keep.
        return ((torch.log(mel + 1e-6) + 4.5) / 5.0).T.contiguous()

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        features, mask = pad_stack([it["features"] for it in items])
        return {"features": features, "mask": mask}


@register_encoder("logmel_cnn", config=LogMelCNNConfig, modality="audio")
class LogMelCNNEncoder(Encoder):
    """A small 2-D CNN over log-mel spectrograms (torchaudio features), trained from scratch."""

    modality = "audio"
    processor_class = LogMelProcessor

    def __init__(self, config: LogMelCNNConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in config.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.stride = 2 ** len(config.channels)
        self.proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(c_in, config.dim))
        self.pool = nn.Linear(2 * config.dim, config.dim)  # mean and std statistics pooling
        self.dim = config.dim

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> ModalityEmbedding:
        """Padded frames are zeroed after every block, so that a convolution at the end of a clip sees the
        same zeros as its own padding gives a clip alone: an example's embedding does not depend on the
        length of the others in its batch."""
        x = features.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        lengths = mask.sum(1)
        for layer in self.cnn:
            if isinstance(layer, nn.MaxPool2d):
                valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
                x = x * valid[:, None, None, :].to(x.dtype)
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")  # ceil_mode pooling by 2
            x = layer(x)
        seq = self.proj(x.mean(dim=2).transpose(1, 2))  # [B, T', D]
        out_len = lengths.clamp(min=1, max=seq.shape[1])
        seq_mask = torch.arange(seq.shape[1], device=seq.device)[None, :] < out_len[:, None]
        mean = masked_mean(seq, seq_mask)
        var = masked_mean((seq - mean.unsqueeze(1)) ** 2, seq_mask)
        pooled = self.pool(torch.cat([mean, (var + 1e-5).sqrt()], dim=-1))
        return ModalityEmbedding(seq, seq_mask, pooled)


# --------------------------------------------------------------------------------------------------
# transformers speech models
# --------------------------------------------------------------------------------------------------


@dataclass
class HFAudioConfig(EncoderConfig):
    name: str = "hf_audio"
    checkpoint: str | None = None  # hub id or local folder (wav2vec2, HuBERT, WavLM...)
    model_type: str | None = None  # build from scratch without a checkpoint, e.g. wav2vec2
    pretrained: bool = True  # false: random initialisation from the checkpoint's config
    model_overrides: dict[str, Any] = field(default_factory=dict)  # AutoConfig overrides (tiny test models)
    freeze_feature_encoder: bool = True  # the CNN front end; standard when fine-tuning wav2vec2
    normalize: bool | None = None  # zero-mean unit-variance waveform; None -> the feature extractor's choice


class HFAudioProcessor(WaveformProcessor):
    def __init__(self, config: HFAudioConfig, data: DataConfig | None, base_dir: str | Path | None = None):
        super().__init__(config, data)
        normalize = True
        if config.checkpoint:
            try:
                from transformers import AutoFeatureExtractor

                fe = AutoFeatureExtractor.from_pretrained(resolve_checkpoint(config.checkpoint, base_dir))
                normalize = getattr(fe, "do_normalize", True)
                if getattr(fe, "sampling_rate", self.sample_rate) != self.sample_rate:
                    raise ValueError(
                        f"{config.checkpoint} expects {fe.sampling_rate} Hz audio; set data.sample_rate={fe.sampling_rate}"
                    )
            except OSError:
                pass  # no preprocessor_config.json: keep the defaults
        self.normalize = normalize if config.normalize is None else config.normalize

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        wav = self.load(example)
        if wav is None:
            return None
        if self.normalize:
            wav = (wav - wav.mean()) / (wav.std() + 1e-7)
        return {"waveform": wav}


@register_encoder("hf_audio", config=HFAudioConfig, modality="audio")
class HFAudioEncoder(Encoder):
    """A transformers speech model (wav2vec2, HuBERT, WavLM...) by checkpoint or model_type."""

    modality = "audio"
    processor_class = HFAudioProcessor

    def __init__(self, config: HFAudioConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        self.model = load_hf_model(config.checkpoint, config.model_type, config.pretrained, config.model_overrides, base_dir)
        if config.freeze_feature_encoder and hasattr(self.model, "freeze_feature_encoder"):
            self.model.freeze_feature_encoder()
        self.dim = self.model.config.hidden_size
        # wav2vec2-base style models (group norm in the front end) must get zero padding, not a mask.
        self.pass_mask = getattr(self.model.config, "feat_extract_norm", "layer") != "group"

    @classmethod
    def build_processor(cls, config: HFAudioConfig, data: DataConfig | None, base_dir=None) -> HFAudioProcessor:
        return HFAudioProcessor(config, data, base_dir)

    def backbone(self) -> nn.Module:
        return self.model

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor) -> ModalityEmbedding:
        lengths = attention_mask.sum(1)
        if self.pass_mask:
            hidden = self.model(waveform, attention_mask=attention_mask.long()).last_hidden_state
        else:
            # A group-norm front end (wav2vec2-base) normalises over the whole padded waveform and takes no
            # mask, so padding would change every frame: each clip runs alone, at its own length.
            outs = [self.model(waveform[i:i + 1, :int(n)]).last_hidden_state[0] for i, n in enumerate(lengths.tolist())]
            hidden, _ = pad_stack(outs)
        out_len = self.model._get_feat_extract_output_lengths(lengths)
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < out_len[:, None]
        return ModalityEmbedding(hidden, mask, masked_mean(hidden, mask))

    def save_assets(self, directory: Path, relative: str) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(directory)
        if self.config.checkpoint:
            try:
                from transformers import AutoFeatureExtractor

                AutoFeatureExtractor.from_pretrained(resolve_checkpoint(self.config.checkpoint, self.base_dir)).save_pretrained(directory)
            except OSError:
                pass
        return {"checkpoint": relative, "model_type": None, "pretrained": False, "model_overrides": {}}



# --------------------------------------------------------------------------------------------------
# Acoustic functionals (librosa) + MLP
# --------------------------------------------------------------------------------------------------


@dataclass
class AcousticConfig(EncoderConfig):
    name: str = "acoustic"
    n_mfcc: int = 40  # MFCCs per frame
    n_mels: int = 64  # mel bands the MFCCs are taken from (librosa's own default is 128)
    win_ms: float = 25.0  # analysis window, milliseconds
    hop_ms: float = 10.0  # hop between frames, milliseconds
    trim_db: float | None = 30.0  # strip leading/trailing silence below peak - trim_db (None: keep all)
    fmin: float = 60.0  # pitch search range, Hz
    fmax: float = 500.0  # pitch search range, Hz (upper end)
    speaker_norm: bool = False  # standardise each feature with its speaker's own (unlabelled) statistics
    # a BatchNorm on the functionals (its running statistics a global z-score); false: they enter as they
    # are, which suits speaker_norm (already standardised) and a linear probe, where batch statistics are noise
    batch_norm: bool = True
    hidden: list[int] = field(default_factory=lambda: [256])  # widths of the MLP's hidden layers ([] for none)
    dim: int | None = 128  # None (with hidden: []): the normalised functionals themselves, for a linear probe
    dropout: float = 0.3  # dropout before each layer of the MLP


def acoustic_functionals(wav: np.ndarray, sample_rate: int, config: AcousticConfig) -> np.ndarray:
    """Utterance-level statistics of frame features, in the spirit of openSMILE's eGeMAPS functionals:
    MFCC and delta-MFCC mean/std, spectral shape mean/std, loudness and pitch percentiles, voicing and
    duration. A fixed-length float32 vector (``acoustic_feature_names`` names each entry)."""
    import librosa

    if config.trim_db is not None:
        trimmed, _ = librosa.effects.trim(wav, top_db=config.trim_db)
        wav = trimmed if len(trimmed) >= sample_rate // 10 else wav
    n_fft = int(round(sample_rate * config.win_ms / 1000))
    hop = int(round(sample_rate * config.hop_ms / 1000))
    spec = np.abs(librosa.stft(wav, n_fft=n_fft, hop_length=hop)) + 1e-10
    mel = librosa.feature.melspectrogram(S=spec**2, sr=sample_rate, n_mels=config.n_mels)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=config.n_mfcc)
    delta = librosa.feature.delta(mfcc, mode="nearest")
    shape = np.vstack([
        librosa.feature.spectral_centroid(S=spec, sr=sample_rate),
        librosa.feature.spectral_bandwidth(S=spec, sr=sample_rate),
        librosa.feature.spectral_rolloff(S=spec, sr=sample_rate),
        librosa.feature.spectral_flatness(S=spec),
        librosa.feature.zero_crossing_rate(wav, frame_length=n_fft, hop_length=hop),
    ])
    shape[:3] /= sample_rate / 2  # Hz -> fraction of Nyquist, so all features have similar scales
    contrast = librosa.feature.spectral_contrast(S=spec, sr=sample_rate, fmin=100.0, n_bands=5)
    rms_db = librosa.amplitude_to_db(librosa.feature.rms(S=spec, frame_length=n_fft)[0], ref=1.0)
    yin_frame = int(2 ** np.ceil(np.log2(2.2 * sample_rate / config.fmin)))  # room for two periods of fmin
    f0 = librosa.yin(wav, fmin=config.fmin, fmax=config.fmax, sr=sample_rate, frame_length=yin_frame, hop_length=hop)
    n = min(len(f0), len(rms_db), shape.shape[1])
    voiced = (rms_db[:n] > rms_db.max() - 30.0) & (shape[4, :n] < 0.25) & (f0[:n] > config.fmin) & (f0[:n] < config.fmax)
    semitones = 12 * np.log2(f0[:n][voiced] / 55.0) if voiced.any() else np.zeros(1)

    def mean_std(x: np.ndarray) -> list[np.ndarray]:
        return [x.mean(axis=-1), x.std(axis=-1)]

    def spread(x: np.ndarray) -> list[float]:
        p10, p50, p90 = np.percentile(x, [10, 50, 90])
        return [x.mean(), x.std(), p10, p50, p90, p90 - p10]

    parts = [*mean_std(mfcc), *mean_std(delta), *mean_std(shape), *mean_std(contrast),
             np.array(spread(rms_db) + spread(semitones) + [voiced.mean(), np.log(len(wav) / sample_rate)])]
    return np.concatenate([np.atleast_1d(p) for p in parts]).astype(np.float32)


def acoustic_feature_names(config: AcousticConfig) -> list[str]:
    mfcc = [f"mfcc{i}" for i in range(config.n_mfcc)]
    shape = ["centroid", "bandwidth", "rolloff", "flatness", "zcr"]
    contrast = [f"contrast{i}" for i in range(6)]
    names = []
    for group in (mfcc, [f"d_{m}" for m in mfcc], shape, contrast):
        names += [f"{g}_mean" for g in group] + [f"{g}_std" for g in group]
    for g in ("loudness_db", "pitch_st"):
        names += [f"{g}_{s}" for s in ("mean", "std", "p10", "p50", "p90", "range")]
    return names + ["voiced_fraction", "log_duration_s"]


class SpeakerNorm:
    """Per-speaker standardisation: each feature minus its speaker's mean, over its speaker's std, both from
    the speaker's own clips with labels unseen (the standard speech-emotion normalisation, worth ~10 points
    of UAR on EmoDB). Features are ``[F]`` per clip (functionals) or ``[T, F]`` (frames, pooled over clips).

    ``eps`` is added to every std; with ``eps=0`` a feature constant within a speaker is only centred
    (scikit-learn's ``StandardScaler`` rule), which suits feature sets whose scales span many decades.

    Besides the speakers it was fitted on, it keeps global statistics: the mean over every fitted clip and
    the average spread within a speaker (the scale the model was trained on; the spread over all clips, which
    adds the differences between speakers, scored 1.5 points of UAR lower on EmoDB). A speaker it has no
    statistics for (unknown, or not given) is standardised with those, and ``notes`` says so, because
    inference must not fail for a new caller. ``enroll`` adds a speaker from their unlabelled clips.

    A few clips give a noisy spread: an enrolled speaker's variance is shrunk towards the average
    within-speaker variance of the speakers fitted in training, weighted as ``prior_clips`` clips (on EmoDB,
    with 5 to 10 clips, this recovers 2 to 3 points of UAR; with all of a speaker's ~54 clips it changes little).
    """

    def __init__(self, encoder: str, eps: float = 1e-3, prior_clips: float = 10.0):
        self.encoder, self.eps, self.prior_clips = encoder, eps, prior_clips
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.global_stats: tuple[np.ndarray, np.ndarray] | None = None
        self.enrolled: set[str] = set()  # speakers added by ``enroll`` (what an enrolment file holds)

    def _statistics(self, arrays: list[np.ndarray], prior_variance: np.ndarray | None = None,
                    clips: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (plus ``eps``) over every frame; with ``prior_variance``, the variance is shrunk towards
        it as if ``prior_clips`` more clips had it (enrolment from a few clips)."""
        frames = np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])
        if prior_variance is None or self.prior_clips <= 0:
            std = np.std(frames, axis=0) + self.eps
        else:
            variance = (clips * np.var(frames, axis=0) + self.prior_clips * prior_variance) / (clips + self.prior_clips)
            std = (np.sqrt(variance) + self.eps).astype(frames.dtype)
        return np.mean(frames, axis=0), np.where(std > 0, std, 1).astype(std.dtype)

    @staticmethod
    def _collect(examples: list[Example], features: Callable[[Example], np.ndarray | None]
                 ) -> tuple[list[tuple[Example, np.ndarray]], list[tuple[Example, str]]]:
        usable, unusable = [], []
        for ex in examples:
            try:
                feats = features(ex)
            except MediaError as err:
                unusable.append((ex, str(err)))
                continue
            if feats is None:
                unusable.append((ex, "no input of this modality"))
            else:
                usable.append((ex, feats))
        return usable, unusable

    def fit(self, examples: list[Example], features: Callable[[Example], np.ndarray | None]) -> None:
        """Statistics of ``features(example)`` per speaker, and over every clip; clips without usable media
        are left out (the dataset counts them when it meets them), clips without a speaker count only in
        the global statistics."""
        usable, _ = self._collect(examples, features)
        by_speaker: dict[str, list[np.ndarray]] = {}
        for ex, feats in usable:
            if ex.speaker is not None:
                by_speaker.setdefault(ex.speaker, []).append(feats)
        self.stats = {speaker: self._statistics(arrays) for speaker, arrays in by_speaker.items()}
        self.enrolled = set()
        self.global_stats = None
        if usable:
            mean, std = self._statistics([f for _, f in usable])
            within = self._within_variance()
            if within is not None:  # the spread the model was trained on, not the one between speakers
                std = (np.sqrt(within) + self.eps).astype(std.dtype)
                std = np.where(std > 0, std, 1).astype(std.dtype)
            self.global_stats = (mean, std)

    def enroll(self, speaker: str, examples: list[Example], features: Callable[[Example], np.ndarray | None]
               ) -> list[tuple[Example, str]]:
        """Statistics of one more speaker from their clips (the others are kept); returns the clips that could
        not be used with the reason. No usable clip: nothing changes."""
        usable, unusable = self._collect(examples, features)
        if usable:
            self.stats[speaker] = self._statistics([f for _, f in usable], self._within_variance(), len(usable))
            self.enrolled.add(speaker)
        return unusable

    def _within_variance(self) -> np.ndarray | None:
        """The average per-feature variance within the speakers fitted in training (not enrolled), or None."""
        fitted = [std for s, (_, std) in self.stats.items() if s not in self.enrolled]
        return np.mean([np.square(np.maximum(d - self.eps, 0)) for d in fitted], axis=0) if fitted else None

    def state(self) -> Any:
        """The fitted statistics in a JSON-able form (``Processor.fitted_state``), or None when unfitted."""
        if not self.stats and self.global_stats is None:
            return None
        state = {s: [m.tolist(), d.tolist()] for s, (m, d) in sorted(self.stats.items())}
        if self.global_stats is not None:
            state[""] = [self.global_stats[0].tolist(), self.global_stats[1].tolist()]
        return state

    def lookup(self, speaker: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The statistics ``speaker`` is standardised with: their own, else the global ones, else None."""
        return self.stats.get(speaker) if speaker in self.stats else self.global_stats

    def notes(self, example: Example) -> list[str]:
        if example.speaker in self.stats:
            return []
        who = "no speaker given" if example.speaker is None else f"speaker {example.speaker!r} is not enrolled"
        if self.global_stats is None:
            return []  # the input is dropped with its own reason (__call__)
        return [f"{who}: {self.encoder} features normalised with the global statistics "
                "(enrol the speaker for their own)"]

    def __call__(self, feats: np.ndarray, example: Example) -> np.ndarray:
        stats = self.lookup(example.speaker)
        if stats is None:
            raise MediaError(describe(example.audio), "no speaker statistics",
                             f"{self.encoder} speaker_norm has no statistics for speaker {example.speaker!r} and this "
                             "model was saved without global ones; enrol the speaker first (mmemo enroll)")
        mean, std = stats
        return (feats - mean) / std

    # -- the saved form (safetensors tensors + JSON metadata) -------------------------------------------
    def to_tensors(self, speakers: Iterable[str] | None = None) -> FittedTensors | None:
        """Every speaker's statistics stacked ``[S, F]`` (and the global ones), or only ``speakers``'."""
        names = sorted(self.stats) if speakers is None else sorted(s for s in speakers if s in self.stats)
        tensors: dict[str, torch.Tensor] = {}
        if names:
            tensors["mean"] = torch.from_numpy(np.stack([self.stats[s][0] for s in names]))
            tensors["std"] = torch.from_numpy(np.stack([self.stats[s][1] for s in names]))
        if speakers is None and self.global_stats is not None:
            tensors["global_mean"], tensors["global_std"] = (torch.from_numpy(np.asarray(a)) for a in self.global_stats)
        if not tensors:
            return None
        return FittedTensors(tensors, {"kind": "speaker_norm", "encoder": self.encoder, "speakers": names,
                                       "enrolled": sorted(self.enrolled & set(names))})

    def load(self, state: FittedTensors, source: str, n_features: int | None = None) -> None:
        """Add (or replace) the speakers of ``state``, and take its global statistics when it has any; a file
        made for another encoder or feature count is a ``CheckpointError`` naming ``source``."""
        meta, tensors = state.meta, state.tensors
        if meta.get("kind") != "speaker_norm" or meta.get("encoder") != self.encoder:
            raise CheckpointError(f"{source}: holds {meta.get('kind')} state of a {meta.get('encoder')} encoder, "
                                  f"not speaker statistics of {self.encoder}")
        names = meta.get("speakers", [])
        arrays = {k: v.numpy() for k, v in tensors.items()}
        widths = {a.shape[-1] for a in arrays.values()}
        if (names and (arrays.get("mean") is None or arrays["mean"].shape[0] != len(names)
                       or arrays["std"].shape != arrays["mean"].shape)) or len(widths) > 1 \
                or (n_features is not None and widths and widths != {n_features}):
            raise CheckpointError(f"{source}: the {self.encoder} speaker statistics do not fit this model "
                                  f"({len(names)} speakers, widths {sorted(widths)}, the model reads {n_features})")
        for i, speaker in enumerate(names):
            self.stats[speaker] = (arrays["mean"][i], arrays["std"][i])
        self.enrolled |= set(meta.get("enrolled", [])) & set(names)
        if "global_mean" in arrays:
            self.global_stats = (arrays["global_mean"], arrays["global_std"])


class SpeakerNormProcessor(WaveformProcessor):
    """A waveform processor whose features (``raw_features``) may be standardised per speaker
    (``config.speaker_norm``): the fit step, its saved state and enrolment of new speakers, shared by every
    encoder of utterance features (``acoustic``, ``opensmile``)."""

    speaker_norm: SpeakerNorm

    def raw_features(self, example: Example) -> np.ndarray | None:
        raise NotImplementedError

    def n_features(self) -> int | None:
        """The width of a feature vector, to check loaded statistics against; None when unknown."""
        return None

    def prefetch(self, examples: list[Example]) -> None:
        """Compute the features of many clips at once before fitting (e.g. in threads); by default, nothing."""

    @property
    def learns(self) -> bool:
        return bool(self.config.speaker_norm)

    def fit(self, examples: list[Example]) -> None:
        """Per-speaker mean and std of every feature (over every frame, for frame features), from the
        speaker's own clips (no labels), and over all clips as the fallback."""
        if self.learns:
            self.prefetch(examples)
            self.speaker_norm.fit(examples, self.raw_features)

    def enroll(self, speaker: str, examples: list[Example]) -> list[tuple[Example, str]]:
        if not self.learns:
            return super().enroll(speaker, examples)
        self.prefetch(examples)
        return self.speaker_norm.enroll(speaker, examples, self.raw_features)

    def fitted_state(self) -> Any:
        return self.speaker_norm.state()

    def fitted_tensors(self, speakers: Iterable[str] | None = None) -> FittedTensors | None:
        return self.speaker_norm.to_tensors(speakers) if self.learns else None

    def load_fitted_tensors(self, state: FittedTensors, source: str) -> None:
        if not self.learns:
            super().load_fitted_tensors(state, source)
        self.speaker_norm.load(state, source, self.n_features())

    def speakers(self) -> list[str]:
        return sorted(self.speaker_norm.stats)

    def notes(self, example: Example) -> list[str]:
        return self.speaker_norm.notes(example) if self.learns and example.audio is not None else []

    def normalised(self, feats: np.ndarray, example: Example) -> np.ndarray:
        return self.speaker_norm(feats, example) if self.learns else feats


class AcousticProcessor(SpeakerNormProcessor):
    """Waveform -> one vector of acoustic functionals, computed once per clip and kept (a few hundred
    floats each), optionally standardised with the clip's speaker's statistics."""

    def __init__(self, config: AcousticConfig, data: DataConfig | None):
        super().__init__(config, data)
        self._features: dict[tuple, np.ndarray] = {}
        self.speaker_norm = SpeakerNorm("acoustic")

    @property
    def speaker_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.speaker_norm.stats

    def n_features(self) -> int:
        return len(acoustic_feature_names(self.config))

    def raw_features(self, example: Example) -> np.ndarray | None:
        if example.audio is None:
            return None
        # Kept per file version (a replaced file is recomputed); in-memory inputs are not kept.
        key = tuple(file_identity(example.audio)) if is_path(example.audio) else None
        if key is None or key not in self._features:
            wav = self.load(example)
            feats = acoustic_functionals(wav.numpy(), self.sample_rate, self.config)
            if key is None:
                return feats
            self._features[key] = feats
        return self._features[key]

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        feats = self.raw_features(example)
        if feats is None:
            return None
        feats = self.normalised(feats, example)
        return {"features": torch.from_numpy(np.asarray(feats, dtype=np.float32))}

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"features": torch.stack([it["features"] for it in items])}


@register_encoder("acoustic", config=AcousticConfig, modality="audio")
class AcousticEncoder(Encoder):
    """Utterance-level librosa functionals (MFCC, spectral, loudness, pitch), normalised, then an MLP; with
    ``hidden: []`` and ``dim: null``, the functionals themselves (for the ``probe`` fusion: a linear model)."""

    modality = "audio"
    processor_class = AcousticProcessor

    def __init__(self, config: AcousticConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        n_features = len(acoustic_feature_names(config))
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

    def forward(self, features: torch.Tensor) -> ModalityEmbedding:
        x = features.float()
        norm = self.mlp[0]
        # a last batch of one has no batch statistics: use the running ones
        if self.training and x.shape[0] == 1 and isinstance(norm, nn.BatchNorm1d):
            x = nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
            pooled = self.mlp[1:](x)
        else:
            pooled = self.mlp(x)
        mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return ModalityEmbedding(pooled.unsqueeze(1), mask, pooled)
