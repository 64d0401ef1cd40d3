"""Streaming decode of long recordings: a file's audio track in blocks of a fixed length, read with
torchcodec's range decoding (``AudioDecoder.get_samples_played_in_range``), so that memory holds one block
whatever the recording's length; and ``Windower``, which cuts any sequence of blocks (a file's, or chunks
arriving from a live call) into overlapping windows.

A region that cannot be decoded is retried in short pieces, and what cannot be read is skipped and
reported (``AudioStream.problems``); a file that ends before its header says is reported too. The blocks
carry their position, so a gap is never mistaken for contiguous audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from mmemo.data.media import MediaError, _check_file, _short, audio_backend, load_audio, media_duration


@dataclass
class AudioBlock:
    """Mono float32 samples starting at sample ``start`` (at the stream's sample rate)."""

    start: int
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


@dataclass
class AudioStream:
    """Iterate over a file's audio in blocks of ``block_seconds`` at ``sample_rate``, mono. ``problems`` lists
    each region that could not be read, and an early end; ``duration`` is the header's (None: unknown)."""

    path: str | os.PathLike
    sample_rate: int = 16000
    block_seconds: float = 30.0
    retry_seconds: float = 1.0  # a block that fails is retried in pieces this long
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = _check_file(self.path)
        self.duration = media_duration(self.path)
        self.read_seconds = 0.0  # the end of the last samples read
        self._unreadable: list[list] = []  # [start, stop, why] of regions that could not be decoded

    # -- decoding one range -------------------------------------------------------------------------
    def _open(self):
        from torchcodec.decoders import AudioDecoder

        try:
            return AudioDecoder(str(self.path), sample_rate=self.sample_rate, num_channels=1)
        except (RuntimeError, ValueError) as exc:
            if "audio stream" in str(exc).lower() or "best stream" in str(exc).lower():
                raise MediaError(self.path, "no audio track") from None
            raise MediaError(self.path, "cannot decode audio", _short(exc)) from None

    def _range(self, decoder, start: float, stop: float) -> tuple[int, np.ndarray] | None:
        """(first sample, samples) of [start, stop); None past the end of the data; raises on a decode error."""
        if decoder is None:  # PyAV: each range decoded from the file's start (torchcodec is the streaming path)
            try:
                wav = load_audio(self.path, self.sample_rate, stop - start, start=start).numpy()
            except MediaError as err:
                if err.reason == "zero-length audio":
                    return None
                raise
            return round(start * self.sample_rate), wav
        try:
            out = decoder.get_samples_played_in_range(start, stop)
        except RuntimeError as exc:
            if "no audio frames were decoded" in str(exc).lower():
                return None
            raise MediaError(self.path, "cannot decode audio", _short(exc)) from None
        data = out.data
        wav = (data.mean(0) if data.dim() == 2 else data).numpy().astype(np.float32, copy=False)
        if not len(wav):
            return None
        return round(out.pts_seconds * self.sample_rate), wav

    def __iter__(self) -> Iterator[AudioBlock]:
        torchcodec = audio_backend() == "torchcodec"
        decoder = self._open() if torchcodec else None
        start, lost_blocks = 0.0, 0
        while self.duration is None or start < self.duration - 1e-3:
            stop = start + self.block_seconds
            try:
                got = self._range(decoder, start, stop)
            except MediaError as err:
                read_before = self.read_seconds
                yield from self._retry(start, stop, err)
                decoder = self._open() if torchcodec else None  # a decoder that failed may be left mid-packet
                # with no duration to stop at, two blocks without a readable sample are taken as the end
                lost_blocks = lost_blocks + 1 if self.read_seconds == read_before else 0
                if self.duration is None and lost_blocks >= 2:
                    break
                start = stop
                continue
            if got is None:
                break
            block = AudioBlock(*got)
            lost_blocks = 0
            self.read_seconds = block.end / self.sample_rate
            yield block
            if len(block.samples) < round(self.block_seconds * self.sample_rate) - 1:
                break
            start = stop
        self._summarise()
        if self.duration is not None and self.read_seconds < self.duration - 0.5:
            self.problems.append(f"{self.path}: the audio ends at {self.read_seconds:.1f} s, before the "
                                 f"{self.duration:.1f} s its header gives")

    def _retry(self, start: float, stop: float, err: MediaError) -> Iterator[AudioBlock]:
        """The readable pieces of a block that failed; each unreadable run is reported once."""
        bad_from: float | None = None
        piece = start
        torchcodec = audio_backend() == "torchcodec"
        decoder = self._open() if torchcodec else None
        if self.duration is not None:
            stop = min(stop, self.duration)
        while piece < stop - 1e-9:
            end = min(stop, piece + self.retry_seconds)
            try:
                got = self._range(decoder, piece, end)
            except MediaError:
                got, decoder = False, (self._open() if torchcodec else None)
            if got:
                if bad_from is not None:
                    self._report(bad_from, piece, err)
                    bad_from = None
                block = AudioBlock(*got)
                self.read_seconds = block.end / self.sample_rate
                yield block
            elif got is None and (self.duration is None or piece >= self.duration - 1e-3):
                break  # past the data
            elif bad_from is None:
                bad_from = piece
            piece = end
        if bad_from is not None:
            self._report(bad_from, min(piece, stop), err)

    def _report(self, start: float, stop: float, err: MediaError) -> None:
        """An unreadable region; one that continues the previous one extends it."""
        if self._unreadable and abs(self._unreadable[-1][1] - start) < 1e-6:
            self._unreadable[-1][1] = stop
        else:
            self._unreadable.append([start, stop, err.detail or err.reason])

    def _summarise(self) -> None:
        for start, stop, why in self._unreadable:
            self.problems.append(f"{self.path}: {start:.1f}-{stop:.1f} s could not be decoded and is skipped ({why})")
        self._unreadable = []


class Windower:
    """Overlapping windows of ``window`` seconds every ``hop`` seconds over blocks that arrive in order,
    holding no more samples than one window and one block.

    Windows start on the grid 0, hop, 2·hop... of the stream's clock. Where the audio stops (the end, or a
    region that could not be read), the samples after the last full window are covered by one more window
    ending there (as long as a window where there is enough audio, else what there is, if at least
    ``min_seconds``); after a gap, windows start again at the next grid point.
    """

    def __init__(self, sample_rate: int, window: float, hop: float, min_seconds: float = 0.25):
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
        self.sample_rate = sample_rate
        self.window_n = max(1, round(window * sample_rate))
        self.hop_n = max(1, round(hop * sample_rate))
        self.min_n = max(1, round(min_seconds * sample_rate))
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of the buffer's first sample
        self._next = 0  # start of the next window on the grid
        self._covered = 0  # end of the last window emitted
        self._started = False

    @property
    def _buffer_end(self) -> int:
        return self._buffer_start + len(self._buffer)

    def push(self, samples: np.ndarray, start: int | None = None) -> list[tuple[int, int, np.ndarray]]:
        """Add samples (starting at sample ``start``; default: right after the previous ones); returns the
        windows completed, as ``(start, end, samples)`` in sample indices."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        start = self._buffer_end if start is None or not self._started else start
        out: list[tuple[int, int, np.ndarray]] = []
        if self._started and start > self._buffer_end:  # a gap: close the audio before it
            out += self.flush()
        if not self._started or start > self._buffer_end:
            self._buffer, self._buffer_start = np.zeros(0, np.float32), start
            self._next = max(self._next, math.ceil(start / self.hop_n) * self.hop_n)
            self._started = True
        elif start < self._buffer_end:  # overlapping samples (a decoder's rounding): keep the new ones' tail
            samples = samples[self._buffer_end - start:]
        self._buffer = np.concatenate([self._buffer, samples]) if len(self._buffer) else samples.copy()
        while self._next + self.window_n <= self._buffer_end:
            a = self._next - self._buffer_start
            out.append((self._next, self._next + self.window_n, self._buffer[a:a + self.window_n].copy()))
            self._covered = self._next + self.window_n
            self._next += self.hop_n
        keep_from = max(self._buffer_start, min(self._next, self._buffer_end - self.window_n))
        self._buffer = self._buffer[keep_from - self._buffer_start:]
        self._buffer_start = keep_from
        return out

    def flush(self) -> list[tuple[int, int, np.ndarray]]:
        """The window that covers what follows the last full window, at the end or before a gap."""
        end = self._buffer_end
        if not self._started or end <= self._covered or end - max(self._covered, self._buffer_start) < self.min_n:
            return []
        begin = max(self._buffer_start, end - self.window_n)
        if end - begin < self.min_n:
            return []
        self._covered = end
        return [(begin, end, self._buffer[begin - self._buffer_start:].copy())]
