"""The one record every reader produces and every processor consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Turn:
    speaker: str | None
    text: str


@dataclass
class Example:
    """One utterance. Media fields are paths (readers) or in-memory values (the Python API, see
    ``mmemo.data.media.read_audio``/``read_video``/``read_image``); ``None`` means no such input."""

    id: str
    label: str | None = None
    text: str | None = None
    audio: Any = None  # a path (for MELD the clip itself: its audio track) or (array, sample_rate)
    video: Any = None  # a path, or frames in memory
    image: Any = None  # a path or an image in memory; a still image is a one-frame video
    speaker: str | None = None
    dialogue_id: str | None = None
    utterance_id: int | None = None
    context_before: tuple[Turn, ...] = ()
    context_after: tuple[Turn, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def visual(self) -> Any:
        return self.video or self.image


@dataclass
class Splits:
    """Examples per split name (train, dev, test), as a reader returns them. ``labels``: the class names the
    source declares (a ``datasets`` ClassLabel), used when the config names no label set; ``columns``: which
    column fed each field, for the log line that says so."""

    splits: dict[str, list[Example]]
    labels: list[str] | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> list[Example]:
        return self.splits[name]

    def __contains__(self, name: str) -> bool:
        return name in self.splits and len(self.splits[name]) > 0

    def names(self) -> list[str]:
        return list(self.splits)
