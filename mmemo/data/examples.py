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
    """One utterance. Media fields are paths; ``None`` means the example has no such input."""

    id: str
    label: str | None = None
    text: str | None = None
    audio: str | None = None  # a path; for MELD the clip itself (its audio track)
    video: str | None = None
    image: str | None = None  # a still image is a one-frame video
    speaker: str | None = None
    dialogue_id: str | None = None
    utterance_id: int | None = None
    context_before: tuple[Turn, ...] = ()
    context_after: tuple[Turn, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def visual(self) -> str | None:
        return self.video or self.image


@dataclass
class Splits:
    """Examples per split name (train, dev, test), as a reader returns them."""

    splits: dict[str, list[Example]]

    def __getitem__(self, name: str) -> list[Example]:
        return self.splits[name]

    def __contains__(self, name: str) -> bool:
        return name in self.splits and len(self.splits[name]) > 0

    def names(self) -> list[str]:
        return list(self.splits)
