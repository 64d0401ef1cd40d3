"""Speech segments for timelines: silero-vad (``pip install mmemo[vad]``, which ships its model in the package;
nothing is downloaded) over the recording, streamed at 16 kHz, so that a timeline scores what was said and
skips silence.

silero-vad scores 32 ms frames with a recurrent state carried across blocks; its own
``get_speech_timestamps_from_probs`` turns the frame probabilities into segments, split where they run past
``max_seconds`` (at their longest pause). A region that could not be decoded counts as silence.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import numpy as np
import torch

from mmemo.data.audio_stream import AudioStream
from mmemo.inference.timeline import BAR

VAD_RATE = 16000
FRAME = 512  # samples per silero-vad frame at 16 kHz
INSTALL_HINT = "pip install mmemo[vad]"


@functools.cache
def silero_model() -> Any:
    """The packaged silero-vad model (TorchScript). Importing silero_vad sets torch's thread count to 1;
    the caller's setting is restored."""
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            from silero_vad import load_silero_vad

            model = load_silero_vad()
    except ImportError as exc:
        raise ImportError(f"--segments vad needs the silero-vad package: {INSTALL_HINT}") from exc
    finally:
        torch.set_num_threads(threads)
    return model


def speech_probabilities(path: str | os.PathLike, progress: bool = False, problems: list[str] | None = None
                         ) -> tuple[np.ndarray, int]:
    """silero-vad's speech probability for every 32 ms frame of the file, and the number of samples at 16 kHz."""
    from tqdm.auto import tqdm

    model = silero_model()
    stream = AudioStream(path, VAD_RATE, block_seconds=60.0)
    probs: list[float] = []
    carry = np.zeros(0, np.float32)
    position = 0  # sample index of carry's first sample
    model.reset_states()
    total = round(stream.duration, 1) if stream.duration else None
    bar = tqdm(total=total, unit="s", desc="voice activity", disable=not progress, leave=False,
               bar_format=BAR if total else None)
    with torch.inference_mode():
        for block in stream:
            bar.update(round(len(block.samples) / VAD_RATE, 3))
            if block.start > position + len(carry):  # a gap: silence in its frames, a fresh state after it
                aligned = -(-block.start // FRAME) * FRAME
                probs += [0.0] * ((aligned - position) // FRAME)  # len(probs) stays position // FRAME
                model.reset_states()
                samples, position = block.samples[aligned - block.start:], aligned
            else:
                samples = np.concatenate([carry, block.samples]) if len(carry) else block.samples
            whole = len(samples) // FRAME * FRAME
            frames = torch.from_numpy(np.ascontiguousarray(samples[:whole])).view(-1, FRAME)
            probs += [float(model(frame[None], VAD_RATE)) for frame in frames]
            carry, position = samples[whole:], position + whole
        if len(carry):
            probs.append(float(model(torch.from_numpy(np.pad(carry, (0, FRAME - len(carry))))[None], VAD_RATE)))
    bar.close()
    if problems is not None:
        problems += stream.problems
    return np.asarray(probs, np.float32), position + len(carry)


def speech_segments(path: str | os.PathLike, max_seconds: float = 10.0, threshold: float = 0.5,
                    progress: bool = False, problems: list[str] | None = None) -> list[tuple[float, float]]:
    """``(start, end)`` in seconds of each speech segment, none longer than ``max_seconds``."""
    silero_model()  # the install hint before any decoding
    from silero_vad import get_speech_timestamps_from_probs

    probs, n = speech_probabilities(path, progress, problems)
    found = get_speech_timestamps_from_probs(probs.tolist(), sampling_rate=VAD_RATE, threshold=threshold,
                                             max_speech_duration_s=max_seconds, audio_length_samples=n)
    return [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in found]


class SegmentCutter:
    """The samples of known segments (sample indices, sorted) out of blocks that arrive in order; the same
    ``push``/``flush`` as ``Windower``."""

    def __init__(self, segments: list[tuple[int, int]]):
        self.segments = sorted(segments)
        self._next = 0
        self._parts: list[np.ndarray] = []

    def push(self, samples: np.ndarray, start: int | None = None) -> list[tuple[int, int, np.ndarray]]:
        start = 0 if start is None else start
        end = start + len(samples)
        out = []
        while self._next < len(self.segments):
            a, b = self.segments[self._next]
            if a >= end:
                break
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                self._parts.append(samples[lo - start:hi - start])
            if b > end:
                break
            out += self._emit()
        return out

    def _emit(self) -> list[tuple[int, int, np.ndarray]]:
        a, b = self.segments[self._next]
        self._next += 1
        parts, self._parts = self._parts, []
        return [(a, b, np.concatenate(parts).astype(np.float32, copy=False))] if parts else []

    def flush(self) -> list[tuple[int, int, np.ndarray]]:
        return self._emit() if self._next < len(self.segments) and self._parts else []
