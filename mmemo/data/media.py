"""Decoding media files into tensors, through torchcodec (FFmpeg) for audio and video and PIL for images.

Every failure becomes a ``MediaError`` that names the file and a short reason, so a corrupt clip can be
skipped and counted instead of stopping a run with a traceback from inside a decoder.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}


class MediaError(RuntimeError):
    """A media file that cannot be used; ``reason`` is a short machine-countable key."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(p, "missing file")
    if not p.is_file():
        raise MediaError(p, "not a file")
    if p.stat().st_size == 0:
        raise MediaError(p, "empty file")
    return p


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    # torchcodec prefixes its messages with the C++ source location; keep only what FFmpeg said.
    line = re.sub(r"^.*?\.cpp:\d+,\s*", "", text[0])
    return line.strip()[:200]


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    start: float = 0.0,
) -> torch.Tensor:
    """Mono float32 waveform at ``sample_rate`` from any FFmpeg-readable file (wav, flac, mp3, mp4...)."""
    p = _check_file(path)
    from torchcodec.decoders import AudioDecoder

    try:
        decoder = AudioDecoder(str(p), sample_rate=sample_rate, num_channels=1)
    except (RuntimeError, ValueError) as exc:
        msg = str(exc).lower()
        if "no audio stream" in msg or "no valid stream" in msg or "best stream" in msg or "audio stream" in msg:
            raise MediaError(p, "no audio track") from None
        raise MediaError(p, "cannot decode audio", _short(exc)) from None
    stop = None if max_seconds is None else start + max_seconds
    try:
        samples = decoder.get_samples_played_in_range(start, stop).data
    except (RuntimeError, ValueError) as exc:
        raise MediaError(p, "cannot decode audio", _short(exc)) from None
    wav = samples.mean(dim=0) if samples.dim() == 2 else samples
    wav = wav.to(torch.float32).contiguous()
    if wav.numel() == 0:
        raise MediaError(p, "zero-length audio")
    if not torch.isfinite(wav).all():
        raise MediaError(p, "cannot decode audio", "non-finite samples")
    return wav


def is_silent(wav: torch.Tensor, threshold: float = 1e-4) -> bool:
    return wav.numel() == 0 or float(wav.abs().max()) < threshold


def _resize_transforms(width: int, height: int, size: int | None):
    """Shorter side to ``size`` then a centre square crop, done inside the decoder so that a 720p
    frame never exists in memory at full size."""
    if not size:
        return None
    from torchcodec.transforms import CenterCrop, Resize

    scale = size / min(width, height)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    return [Resize((new_h, new_w)), CenterCrop((size, size))]


def uniform_indices(num_available: int, k: int) -> list[int]:
    """Centres of ``k`` equal segments over ``num_available`` frames (repeats when the clip is short)."""
    if num_available <= 0:
        return []
    return [min(num_available - 1, int(math.floor((i + 0.5) * num_available / k))) for i in range(k)]


def load_video_frames(path: str | os.PathLike, num_frames: int = 8, size: int | None = None) -> torch.Tensor:
    """``num_frames`` RGB frames sampled uniformly across the clip, uint8 ``[K, 3, H, W]``.

    Only the sampled frames are materialised; the decoder seeks to each.
    """
    p = _check_file(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(p, size)
    from torchcodec.decoders import VideoDecoder

    try:
        probe = VideoDecoder(str(p), seek_mode="approximate")
        meta = probe.metadata
        width, height = meta.width, meta.height
        transforms = _resize_transforms(width, height, size)
        decoder = VideoDecoder(str(p), transforms=transforms) if transforms else probe
        count = decoder.metadata.num_frames or len(decoder)
    except (RuntimeError, ValueError) as exc:
        msg = str(exc).lower()
        if "video stream" in msg or "no valid stream" in msg or "best stream" in msg:
            raise MediaError(p, "no video track") from None
        raise MediaError(p, "cannot decode video", _short(exc)) from None
    if not count:
        raise MediaError(p, "no video frames")
    try:
        frames = decoder.get_frames_at(indices=uniform_indices(count, num_frames)).data
    except (RuntimeError, ValueError, IndexError) as exc:
        raise MediaError(p, "cannot decode video", _short(exc)) from None
    if frames.shape[0] == 0:
        raise MediaError(p, "no video frames")
    return frames


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """An image as a one-frame video, uint8 ``[1, 3, H, W]``; greyscale becomes three equal channels."""
    p = _check_file(path) if not hasattr(path, "read") else path
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            return image_to_frames(img, size)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaError(str(p), "cannot decode image", _short(exc)) from None


def image_to_frames(img, size: int | None = None) -> torch.Tensor:
    from PIL import Image

    img = img.convert("RGB")
    if size:
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def media_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return "unknown"
