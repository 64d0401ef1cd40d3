"""Emotion over a whole recording: a prediction per window (or per speech segment), with its start and end.

The file's audio is decoded in blocks as it is read (``mmemo.data.audio_stream``), cut into windows of
``window`` seconds every ``hop`` seconds, and the windows go through the encoders ``batch_size`` at a time:
memory holds a block and a batch, whatever the recording's length. With ``segments="vad"`` the windows are
the speech segments silero-vad finds (``mmemo.inference.vad``); silence is skipped. A transcript
(``mmemo.data.transcript``) gives each window its text and speaker; the speaker picks the enrolled
statistics. Regions that cannot be decoded give no rows, and the timeline's warnings say where.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

from mmemo.data.audio_stream import AudioStream, Windower
from mmemo.data.examples import Example
from mmemo.data.transcript import Transcript
from mmemo.inference.prediction import Prediction

if TYPE_CHECKING:
    from mmemo.inference.recognizer import EmotionRecognizer

log = logging.getLogger("mmemo")
SEGMENTS = ("fixed", "vad")
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"


@dataclass
class TimelineRow(Prediction):
    """A ``Prediction`` for one stretch of a recording: ``start`` and ``end`` in seconds, and the speaker and
    transcript text it was given."""

    start: float = 0.0
    end: float = 0.0
    speaker: str | None = None
    text: str | None = None

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), **super().to_dict(digits),
                "speaker": self.speaker, "text": self.text}


@dataclass
class Timeline:
    """The rows of one recording in time order, the class names, and what went wrong while reading it."""

    rows: list[TimelineRow]
    labels: list[str]
    source: str
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the audio read

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TimelineRow]:
        return iter(self.rows)

    def changes(self) -> list[tuple[float, str]]:
        """``(time, label)`` where the predicted label changes (the middle of the first window with the new
        label and the last window with the old one), the first label at its window's start."""
        out: list[tuple[float, str]] = []
        previous: TimelineRow | None = None
        for row in self.rows:
            if row.label is None:
                continue
            if previous is None:
                out.append((row.start, row.label))
            elif row.label != previous.label:
                out.append(((previous.start + previous.end + row.start + row.end) / 4, row.label))
            previous = row
        return out

    def write_csv(self, out: str | os.PathLike | IO[str]) -> None:
        """``start, end, label, p_<class>..., speaker, text, warnings, error``: one row per window."""
        if isinstance(out, (str, os.PathLike)):
            with open(out, "w", newline="", encoding="utf-8") as f:
                return self.write_csv(f)
        writer = csv.writer(out)
        writer.writerow(["start", "end", "label", *(f"p_{c}" for c in self.labels), "speaker", "text", "warnings", "error"])
        for r in self.rows:
            writer.writerow([f"{r.start:.3f}", f"{r.end:.3f}", r.label or "",
                             *(f"{r.probs[c]:.6f}" if r.probs else "" for c in self.labels),
                             r.speaker or "", r.text or "", " | ".join(r.warnings), r.error or ""])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "labels": self.labels, "seconds": round(self.seconds, 3),
                "warnings": self.warnings, "rows": [r.to_dict() for r in self.rows]}

    def write_json(self, out: str | os.PathLike | IO[str]) -> None:
        if isinstance(out, (str, os.PathLike)):
            Path(out).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        else:
            json.dump(self.to_dict(), out, indent=1)

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """A PNG: each class's probability over time (window centres), and the predicted label as a coloured
        band above it."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if r.probs]
        fig, (band, ax) = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True, gridspec_kw={"height_ratios": [1, 6]})
        colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(self.labels)}
        times = np.array([(r.start + r.end) / 2 for r in rows])
        for c in self.labels:
            ax.plot(times, [r.probs[c] for r in rows], label=c, color=colours[c], linewidth=1.2)
        for r in rows:
            band.axvspan(r.start, r.end, color=colours[r.label], linewidth=0, alpha=0.9)
        band.set_yticks([])
        band.set_ylabel("label", rotation=0, ha="right", va="center")
        ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("probability")
        ax.legend(loc="upper right", fontsize="small", ncol=min(len(self.labels), 7))
        band.set_title(title or Path(self.source).name)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def check_window(window: float, hop: float, max_seconds: float | None) -> list[str]:
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive seconds, got window={window}, hop={hop}")
    if max_seconds is not None and window > max_seconds + 1e-6:
        return [f"window {window:g} s is longer than the {max_seconds:g} s of audio the model reads "
                f"(data.max_audio_seconds): each window is cut to its first {max_seconds:g} s"]
    return []


def predict_windows(recognizer: EmotionRecognizer, windows: Iterable[tuple[float, float, Example]],
                    batch_size: int) -> Iterator[TimelineRow]:
    """A row per ``(start, end, example)``, the examples prepared and predicted ``batch_size`` at a time."""
    batch: list[tuple[float, float, Example]] = []

    def run() -> Iterator[TimelineRow]:
        items = [recognizer.preparer(i, ex, parallel_media=False) for i, (_, _, ex) in enumerate(batch)]
        with torch.inference_mode():
            preds = recognizer._predict_items(items)
        for (start, end, ex), pred in zip(batch, preds):
            kept = {f.name: getattr(pred, f.name) for f in dataclasses.fields(pred)}
            yield TimelineRow(**{**kept, "id": None}, start=start, end=end, speaker=ex.speaker, text=ex.text)
        batch.clear()

    for item in windows:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from run()
    if batch:
        yield from run()


class TimelineRun:
    """One recording through ``predict_timeline``: iterate for the rows as they are predicted (a caller may
    write each at once); ``warnings`` and ``seconds`` (the audio read) are complete once iteration ends."""

    def __init__(self, recognizer: EmotionRecognizer, path: str | os.PathLike, window: float = 3.0, hop: float = 1.5,
                 segments: str = "fixed", transcript: str | os.PathLike | Transcript | None = None,
                 speaker: str | None = None, batch_size: int = 16, progress: bool = False, block_seconds: float = 30.0):
        if segments not in SEGMENTS:
            raise ValueError(f"segments must be one of {', '.join(SEGMENTS)}, got {segments!r}")
        if "audio" not in recognizer.modalities:
            raise ValueError("a timeline reads the recording's audio, and this model has no audio input")
        self.recognizer, self.path, self.window, self.hop = recognizer, path, window, hop
        self.segments, self.speaker, self.batch_size, self.progress = segments, speaker, batch_size, progress
        self.rate = recognizer.config.data.sample_rate
        self.warnings = check_window(window, hop, recognizer.config.data.max_audio_seconds)
        self.transcript = transcript if transcript is None or isinstance(transcript, Transcript) else Transcript.read(transcript)
        self.use_text = "text" in recognizer.modalities
        if self.transcript is not None and not self.use_text:
            self.warnings.append("transcript text not used: this model has no text input (its speakers are)")
        self.stream = AudioStream(path, self.rate, block_seconds=max(block_seconds, 2 * window))
        self.seconds = 0.0

    def __iter__(self) -> Iterator[TimelineRow]:
        from tqdm.auto import tqdm

        total = round(self.stream.duration, 1) if self.stream.duration else None
        bar = tqdm(total=total, unit="s", desc="timeline", disable=not self.progress, leave=False,
                   bar_format=BAR if total else None)
        if self.segments == "vad":
            from mmemo.inference.vad import SegmentCutter, speech_segments

            found = speech_segments(self.path, max_seconds=self.window, progress=self.progress, problems=self.warnings)
            cutter: SegmentCutter | Windower = SegmentCutter([(round(a * self.rate), round(b * self.rate)) for a, b in found])
        else:
            cutter = Windower(self.rate, self.window, self.hop)

        def windows() -> Iterator[tuple[float, float, Example]]:
            for block in self.stream:
                bar.update(round(len(block.samples) / self.rate, 3))
                for a, b, wav in cutter.push(block.samples, block.start):
                    yield self._example(a, b, wav)
            for a, b, wav in cutter.flush():
                yield self._example(a, b, wav)

        try:
            yield from predict_windows(self.recognizer, windows(), self.batch_size)
        finally:
            bar.close()
            self.warnings += self.stream.problems
            self.seconds = self.stream.read_seconds

    def _example(self, a: int, b: int, wav: np.ndarray) -> tuple[float, float, Example]:
        start, end = a / self.rate, b / self.rate
        text, who = self.transcript.join(start, end) if self.transcript is not None else (None, None)
        example = Example(id=f"{start:.3f}", text=text if self.use_text else None, audio=(wav, self.rate),
                          speaker=who or self.speaker)
        return start, end, example

    def timeline(self) -> Timeline:
        rows = list(self)
        for w in self.warnings:
            log.warning("timeline: %s", w)
        return Timeline(rows, self.recognizer.labels, str(self.path), list(self.warnings), self.seconds)
