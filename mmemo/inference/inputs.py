"""Inputs to predict on: the kinds of value each keyword takes, checked at once, and their preparation into
processor tensors, with a warning for every input that is dropped or cut.

Inputs (keywords of ``predict``; rows of ``predict_batch``):

- ``text``: a string; ``context``: earlier turns, strings or ``(speaker, text)`` pairs; ``speaker``.
- ``audio``: a path (wav, flac, mp3, ogg, m4a, or a video file's audio track) or ``(array, sample_rate)``
  with the array ``[samples]``, ``[channels, samples]`` or ``[samples, channels]`` (NumPy or torch).
- ``video``: a path (mp4, mkv, webm, avi, mov) or frames in memory: ``[T, H, W, C]`` or ``[T, C, H, W]``
  (NumPy or torch, uint8 or float in [0, 1]) or a list of PIL images. A video file's audio track is the
  audio input unless ``audio`` is given.
- ``image``: a path (jpg, png, ...), a PIL image, or an ``[H, W]`` / ``[H, W, C]`` / ``[C, H, W]`` array.
- Any media input may also be a file's encoded bytes, and audio and video a torchcodec ``AudioDecoder`` /
  ``VideoDecoder``; the values ``datasets`` gives for Audio, Video and Image cells are turned into these by
  ``mmemo.data.cells.media_value`` (``predict_batch`` does it for every row).

Long inputs follow the rule the model was trained with: audio longer than the saved config's
``data.max_audio_seconds`` is cut to its first that many seconds, and vision samples ``data.num_frames``
frames across the whole clip (so memory does not grow with length); text longer than the text encoder's
``max_length`` tokens is cut. Each cut is reported as a warning.

An input that cannot be used (unsupported format, missing, corrupt or empty file, empty string, silent
or zero-length audio, unreadable image) is dropped with a warning naming it and the reason, and the
prediction uses the remaining modalities; with none left, ``predict`` raises ``InputError``. A value of
the wrong type (say an int, or an audio array without its sample rate) raises ``TypeError`` at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mmemo.data.examples import Example, Turn
from mmemo.data.media import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    MediaError,
    describe,
    is_audio_pair,
    is_decoder,
    is_encoded,
    is_path,
    is_url,
    is_video_file,
    media_duration,
)

log = logging.getLogger("mmemo")
# A fast tokenizer raises "Already borrowed" when two threads call it at once; tokenizing is cheap.
_TEXT_LOCK = threading.Lock()

INPUT_FIELDS = ("text", "audio", "video", "image", "context", "speaker")
READABLE_SUFFIXES = {
    "audio": AUDIO_SUFFIXES | VIDEO_SUFFIXES,
    "video": VIDEO_SUFFIXES | IMAGE_SUFFIXES,
    "image": IMAGE_SUFFIXES,
}


def check_input_types(text=None, audio=None, video=None, image=None, context=None, speaker=None) -> None:
    """Raise ``TypeError`` naming the argument when a value is of a kind no processor reads."""
    from PIL import Image

    def fail(name: str, expected: str, value: Any, hint: str = "") -> None:
        raise TypeError(f"{name}: expected {expected}, got {describe(value)}{hint}")

    if text is not None and not isinstance(text, str):
        fail("text", "a string", text)
    if speaker is not None and not isinstance(speaker, str):
        fail("speaker", "a string", speaker)
    if audio is not None and not (is_path(audio) or is_audio_pair(audio) or is_encoded(audio) or is_decoder(audio)):
        hint = "; an array needs its sample rate: audio=(array, sample_rate)" if hasattr(audio, "shape") else ""
        fail("audio", "a path or (array, sample_rate) (or a file's bytes)", audio, hint)
    if video is not None and not (is_path(video) or hasattr(video, "shape") or isinstance(video, (list, tuple))
                                  or is_encoded(video) or is_decoder(video)):
        fail("video", "a path, a frames array/tensor or a list of images (or a file's bytes)", video)
    if image is not None and not (is_path(image) or isinstance(image, Image.Image) or hasattr(image, "shape")
                                  or is_encoded(image)):
        fail("image", "a path, a PIL image or an array/tensor (or a file's bytes)", image)
    if context is not None:
        if isinstance(context, str) or not isinstance(context, Sequence):
            fail("context", "a list of strings or (speaker, text) pairs", context)
        for turn in context:
            if not (isinstance(turn, str) or (isinstance(turn, (tuple, list)) and len(turn) == 2 and isinstance(turn[1], str))):
                fail("context", "a list of strings or (speaker, text) pairs", turn)


def make_example(example_id: str = "input", text: str | None = None, audio: Any = None, video: Any = None, image: Any = None,
                 context: Sequence | None = None, speaker: str | None = None, use_video_audio: bool = True) -> Example:
    """An ``Example`` from ``predict`` keywords; a video file stands in for the audio when none is given."""
    check_input_types(text, audio, video, image, context, speaker)
    turns = tuple(Turn(None, t) if isinstance(t, str) else Turn(*t) for t in (context or ()))
    example = Example(id=example_id, text=text, audio=audio, video=video, image=image, speaker=speaker, context_before=turns)
    return with_video_audio(example) if use_video_audio else example


def with_video_audio(example: Example) -> Example:
    """A video file's audio track (a path or the file's bytes) becomes the audio input when no audio is given."""
    if example.audio is None and example.video is not None and is_video_file(example.video):
        example.audio = example.video
        example.meta["audio_from_video"] = True
    return example


class InputPreparer:
    """One example's raw inputs -> processor tensors, plus what the user must be told: the inputs that
    were dropped (and why) and the long inputs that were cut. Runs in DataLoader workers in
    ``predict_batch``.

    In the main process, the media of one example are read at the same time, each in its own thread:
    decoders release the GIL, so the audio track is read while the video's frames are decoded."""

    def __init__(self, processors: dict[str, Any], max_audio_seconds: float | None):
        self.processors = processors
        self.max_audio_seconds = max_audio_seconds
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, index: int, example: Example, parallel_media: bool = True) -> dict[str, Any]:
        """``parallel_media=False`` where the caller already prepares several examples at once."""
        notes = self._ignored(example)
        example, context_note = self._fit_context(example)
        notes += context_note
        wanted = [m for m in self.processors if _source(example, m) is not None]
        media = [m for m in wanted if m != "text"]
        if parallel_media and len(media) > 1 and get_worker_info() is None:
            pool = self._executor()
            futures = {m: pool.submit(self._read, m, example) for m in media[1:]}
            results = {m: self._read(m, example) for m in wanted if m not in futures}
            results |= {m: f.result() for m, f in futures.items()}
        else:
            results = {m: self._read(m, example) for m in wanted}
        inputs: dict[str, Any] = {m: None for m in self.processors}
        dropped: list[tuple[str, str]] = []  # (modality, why)
        for m in wanted:  # in the model's modality order, whatever finished first
            tensors, why, cut = results[m]
            inputs[m] = tensors
            if why is not None:
                dropped.append((m, why))
            else:
                notes += self._notes(m, example)
            notes += cut
        return {"index": index, "id": example.id, "label": -1, "inputs": inputs, "issues": [],
                "dropped": dropped, "notes": notes}

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mmemo-read")
        return self._pool

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without the threads
        return {**self.__dict__, "_pool": None}

    def _read(self, m: str, example: Example) -> tuple[dict[str, torch.Tensor] | None, str | None, list[str]]:
        """(tensors, why the input was dropped, warnings about cuts) for modality ``m``."""
        processor = self.processors[m]
        source = _source(example, m)
        try:
            if m == "text":
                with _TEXT_LOCK:
                    tensors = processor(example)
                    return tensors, None, self._cut(m, example, processor, tensors)
            _check_format(example, m)
            tensors = processor(example)
            notes = tensors.pop("notes", []) if isinstance(tensors, dict) else []  # e.g. a face fallback
        except MediaError as err:
            return None, str(err), []
        except Exception as exc:  # anything else a decoder throws: name the input, keep the traceback in debug logs
            log.debug("reading %s input %s failed", m, describe(source), exc_info=True)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return None, f"{describe(source)}: cannot read ({type(exc).__name__}{': ' + first if first else ''})", []
        return tensors, None, notes + self._cut(m, example, processor, tensors)

    def _notes(self, m: str, example: Example) -> list[str]:
        """The processor's own notes on this input (an unknown speaker normalised with global statistics)."""
        notes = getattr(self.processors[m], "notes", None)
        return [f"{m}: {n}" for n in notes(example)] if notes is not None else []

    def _ignored(self, example: Example) -> list[str]:
        notes = []
        if example.text is not None and "text" not in self.processors:
            notes.append("text ignored: this model has no text input")
        if example.audio is not None and "audio" not in self.processors and not example.meta.get("audio_from_video"):
            notes.append("audio ignored: this model has no audio input")
        if (example.video is not None or example.image is not None) and "vision" not in self.processors:
            notes.append(f"{'video frames' if example.video is not None else 'image'} ignored: this model has no vision input")
        elif example.video is not None and example.image is not None:
            notes.append("image ignored: vision reads the video's frames")
        return notes

    def _fit_context(self, example: Example) -> tuple[Example, list[str]]:
        """Keep the dialogue context the text encoder was trained with: its last ``context_turns`` turns."""
        text = self.processors.get("text")
        if not example.context_before or text is None:
            return example, []
        past = getattr(text.config, "context_turns", 0)
        if past <= 0:
            return dataclasses.replace(example, context_before=()), [
                "context ignored: this model's text encoder was trained without dialogue context (context_turns: 0)"]
        return dataclasses.replace(example, context_before=example.context_before[-past:]), []

    def _cut(self, modality: str, example: Example, processor: Any, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Warnings for inputs longer than the model reads (the long-input rule in the module docstring)."""
        if modality == "audio" and self.max_audio_seconds is not None:
            source = example.audio
            if is_path(source) or is_encoded(source):
                seconds = media_duration(source)
            elif is_decoder(source):
                seconds = getattr(getattr(source, "metadata", None), "duration_seconds", None)
            else:
                array, rate = source
                seconds = max(np.shape(array) or (0,)) / int(rate)
            if seconds is not None and seconds > self.max_audio_seconds + 0.05:
                return [f"audio: {describe(source)} is {seconds:.1f} s long; only its first {self.max_audio_seconds:g} s "
                        "are used (data.max_audio_seconds)"]
        if modality == "text" and "target_mask" in tensors and hasattr(processor, "tokenizer"):
            total = len(processor.tokenizer(example.text, add_special_tokens=False)["input_ids"])
            kept = int(tensors["target_mask"].sum())
            if kept < total:
                return [f"text: {total} tokens long; only its first {kept} are used (the text encoder's max_length)"]
        return []


def _source(example: Example, modality: str) -> Any:
    if modality == "vision":
        return example.video if example.video is not None else example.image
    return getattr(example, modality)


def _check_format(example: Example, modality: str) -> None:
    field_name = modality if modality != "vision" else ("video" if example.video is not None else "image")
    source = getattr(example, field_name)
    if not is_path(source):
        return
    if is_url(source):
        raise MediaError(source, "URLs are not read", "download the file first")
    suffix = Path(source).suffix.lower()
    allowed = READABLE_SUFFIXES[field_name]
    if suffix not in allowed:
        raise MediaError(source, "unsupported format",
                         f"{suffix or 'no file extension'}; {field_name} reads {', '.join(sorted(allowed))}")


class PreparedInputs(Dataset):
    def __init__(self, examples: list[Example], preparer: InputPreparer):
        self.examples = examples
        self.preparer = preparer

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.preparer(index, self.examples[index])
