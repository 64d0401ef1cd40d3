"""Live audio: chunks as they arrive (a call, a microphone) in, a prediction for each completed window out.

The same windows as a file's timeline (``Windower``: ``window`` seconds every ``hop``), cut at the caller's
sample rate and resampled per window as any in-memory input is; a window is predicted as soon as the chunk
that completes it is fed, so the delay after a window's end is one forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmemo.data.audio_stream import Windower
from mmemo.data.examples import Example
from mmemo.inference.timeline import TimelineRow, check_window, predict_windows

if TYPE_CHECKING:
    from mmemo.inference.recognizer import EmotionRecognizer


class EmotionStream:
    """``feed(chunk)`` returns the rows of the windows that chunk completed; ``close()`` those of the audio
    after the last full window. ``latencies`` holds, per row, the seconds from the call that completed its
    window to its prediction."""

    def __init__(self, recognizer: EmotionRecognizer, sample_rate: int, window: float = 3.0, hop: float = 1.5,
                 speaker: str | None = None):
        if "audio" not in recognizer.modalities:
            raise ValueError("streaming reads audio, and this model has no audio input")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise TypeError(f"stream: sample_rate must be a positive integer, got {sample_rate!r}")
        self.recognizer, self.sample_rate, self.speaker = recognizer, sample_rate, speaker
        self.warnings = check_window(window, hop, recognizer.config.data.max_audio_seconds)
        self.windower = Windower(sample_rate, window, hop)
        self.latencies: list[float] = []
        self.closed = False

    def _rows(self, windows: list[tuple[int, int, np.ndarray]], since: float) -> list[TimelineRow]:
        if not windows:
            return []
        rate = self.sample_rate
        items = [(a / rate, b / rate, Example(id=f"{a / rate:.3f}", audio=(wav, rate), speaker=self.speaker))
                 for a, b, wav in windows]
        rows = list(predict_windows(self.recognizer, items, batch_size=len(items)))
        done = time.perf_counter()
        self.latencies += [done - since] * len(rows)
        return rows

    def feed(self, chunk: Any) -> list[TimelineRow]:
        """Add samples (``[samples]`` or ``[channels, samples]``, NumPy or torch, float in [-1, 1])."""
        if self.closed:
            raise RuntimeError("stream: feed() after close()")
        since = time.perf_counter()
        samples = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
        if samples.ndim == 2:
            samples = samples.mean(0 if samples.shape[0] <= samples.shape[1] else 1)
        if samples.ndim != 1:
            raise ValueError(f"stream: a chunk is [samples] or [channels, samples], got shape {samples.shape}")
        if not np.issubdtype(samples.dtype, np.floating):
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        return self._rows(self.windower.push(samples.astype(np.float32, copy=False)), since)

    def close(self) -> list[TimelineRow]:
        """The last, partial window's row (if there is enough audio after the last full window)."""
        if self.closed:
            return []
        self.closed = True
        return self._rows(self.windower.flush(), time.perf_counter())

    def predictions(self, chunks: Iterable[Any]) -> Iterator[TimelineRow]:
        """Each row as soon as its window is complete, over an iterable of chunks, then the last one."""
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.close()
