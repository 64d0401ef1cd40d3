"""Audio: a log-mel CNN trained from scratch, or any transformers speech model (wav2vec2, HuBERT, WavLM).

Both decode through ``mmemo.data.media.load_audio`` (mono, the configured sample rate); a silent
track counts as absent, not as a very quiet signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example
from mmemo.data.media import MediaError, describe, is_silent, read_audio
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor, masked_mean, pad_stack
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
    n_mels: int = 64
    win_ms: float = 25.0
    hop_ms: float = 10.0
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    dim: int = 128
    dropout: float = 0.1


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
        x = self.cnn(features.transpose(1, 2).unsqueeze(1))  # [B, C, F', T']
        seq = self.proj(x.mean(dim=2).transpose(1, 2))  # [B, T', D]
        lengths = mask.sum(1)
        out_len = torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor").clamp(min=1, max=seq.shape[1])
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
    pretrained: bool = True
    model_overrides: dict[str, Any] = field(default_factory=dict)
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
        out = self.model(waveform, attention_mask=attention_mask.long() if self.pass_mask else None)
        hidden = out.last_hidden_state
        lengths = self.model._get_feat_extract_output_lengths(attention_mask.sum(1))
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
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

