"""Enrolment: a new speaker's statistics learnt from a few of their unlabelled clips, for every processor
with a fit step (per-speaker normalisation in ``acoustic`` and ``opensmile``), kept with the model folder or in
an enrolment file of their own (``mmemo.models.fitted``) that ``predict`` reads.

A model trained with per-speaker normalisation meets callers it has never heard; with a few of their clips
it standardises their features as it did the training speakers', without labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmemo.data.examples import Example
from mmemo.data.media import VIDEO_SUFFIXES, describe, is_audio_pair, is_path
from mmemo.errors import ConfigError, InputError
from mmemo.inference.inputs import make_example
from mmemo.models.encoders.base import Processor
from mmemo.models.fitted import ENROLLMENTS_NAME, apply_fitted, fitted_states, read_fitted, write_fitted

log = logging.getLogger("mmemo")


@dataclass
class Enrollment:
    """What ``enroll`` learnt: the speaker, the clips used, and each clip that could not be used, with why."""

    speaker: str
    used: int
    skipped: list[str] = field(default_factory=list)


def learners(processors: Mapping[str, Processor]) -> dict[str, Processor]:
    """The processors that learn from inputs with the model's settings."""
    return {m: p for m, p in processors.items() if getattr(p, "learns", False)}


def clip_example(speaker: str, index: int, clip: Any) -> Example:
    """An input to enrol from: an audio path, a video path (its audio track; its frames for vision), an
    ``(array, sample_rate)`` pair, or a dict of ``predict`` keywords."""
    name = f"{speaker}-{index}"
    if isinstance(clip, Mapping):
        fields = {k: v for k, v in clip.items() if k != "speaker"}
        return make_example(name, speaker=speaker, **fields)
    if is_path(clip) and Path(clip).suffix.lower() in VIDEO_SUFFIXES:
        return make_example(name, video=clip, speaker=speaker)
    if is_path(clip) or is_audio_pair(clip):
        return make_example(name, audio=clip, speaker=speaker)
    raise TypeError(f"enroll: clip {index}: expected a path, (array, sample_rate) or a dict of predict() keywords, "
                    f"got {describe(clip)}")


def enroll(processors: Mapping[str, Processor], speaker: str, clips: Iterable[Any]) -> Enrollment:
    """Fit ``speaker`` in every learning processor from ``clips`` (unlabelled); ``InputError`` when no clip
    was usable, ``ConfigError`` when the model learns nothing per speaker."""
    if not isinstance(speaker, str) or not speaker.strip():
        raise TypeError(f"enroll: speaker must be a non-empty string, got {describe(speaker)}")
    fitting = learners(processors)
    if not fitting:
        raise ConfigError("enroll: this model keeps no per-speaker statistics (no processor has a fit step with its "
                          "settings, e.g. model.encoders.audio.speaker_norm: true), so there is nothing to enrol")
    if isinstance(clips, (str, Path)) or is_audio_pair(clips):
        clips = [clips]
    examples = [clip_example(speaker, i, clip) for i, clip in enumerate(clips)]
    if not examples:
        raise InputError(f"enroll: no clips given for speaker {speaker!r}")
    skipped: dict[str, str] = {}
    used = 0
    for modality, processor in fitting.items():
        unusable = processor.enroll(speaker, examples)
        for ex, why in unusable:
            skipped.setdefault(ex.id, f"{modality}: {why}")
        used = max(used, len(examples) - len(unusable))
    if used == 0:
        raise InputError(f"enroll: no usable clip for speaker {speaker!r}: " + "; ".join(skipped.values()))
    for why in skipped.values():
        log.warning("enroll %s: clip skipped: %s", speaker, why)
    return Enrollment(speaker, used, list(skipped.values()))


def enrollment_file(path: str | Path) -> Path:
    """A ``.safetensors`` path as it is; anything else is a folder holding ``enrollments.safetensors``."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / ENROLLMENTS_NAME


def enrolled_speakers(processors: Mapping[str, Processor]) -> list[str]:
    """Speakers added by ``enroll`` (or loaded from an enrolment file), not those of training."""
    names: set[str] = set()
    for processor in learners(processors).values():
        names |= set(getattr(getattr(processor, "speaker_norm", None), "enrolled", ()))
    return sorted(names)


def save_enrollments(processors: Mapping[str, Processor], path: str | Path, speakers: Iterable[str] | None = None) -> Path:
    """The enrolled speakers' statistics (``speakers``, default every enrolled one) in their own file."""
    names = enrolled_speakers(processors) if speakers is None else list(speakers)
    states = fitted_states(learners(processors), names) if names else {}
    if not states:
        raise InputError("save_enrollments: no enrolled speaker to save (enroll one first)")
    return write_fitted(states, enrollment_file(path), content="enrollments")


def load_enrollments(processors: Mapping[str, Processor], path: str | Path) -> list[str]:
    """Add the speakers of an enrolment file (a file or a folder holding one); returns their names."""
    file = enrollment_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no enrolment file")
    states = read_fitted(file)
    apply_fitted(processors, states, file)
    return sorted({s for state in states.values() for s in state.meta.get("speakers", [])})
