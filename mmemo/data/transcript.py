"""A timestamped transcript (``start, end, speaker, text`` in seconds), joined to the windows of a timeline:
each window gets the text of every segment it overlaps, and the speaker who talks longest in it.

Read from CSV or JSONL (one segment per row, through ``mmemo.data.tables``) or JSON: a list of segments, or
an object with a ``segments`` list (the shape speech recognisers such as Whisper write). ``speaker`` is
optional; a bad time is an error naming the file and row.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

from mmemo.data.tables import read_table, read_text_file
from mmemo.errors import DataError


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    speaker: str | None
    text: str


class Transcript:
    """Segments sorted by start; ``join`` is called with windows in increasing order of start."""

    def __init__(self, segments: list[Segment]):
        self.segments = sorted(segments, key=lambda s: (s.start, s.end))
        self._starts = [s.start for s in self.segments]
        self._first = 0  # segments before this one end before every window still to come

    @classmethod
    def read(cls, path: str | Path) -> Transcript:
        path = Path(path)
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(read_text_file(path))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
            items = data.get("segments") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise DataError(f"{path}: expected a list of segments or {{\"segments\": [...]}}")
            rows = [(i + 1, item) for i, item in enumerate(items)]
            where = "segment"
        else:
            table = read_table(path, required=("start", "end", "text"))
            rows, where = table.rows, "line"
        segments = []
        for number, row in rows:
            at = f"{path}: {where} {number}"
            if not isinstance(row, dict):
                raise DataError(f"{at}: expected an object with start, end, text")
            try:
                start, end = float(row["start"]), float(row["end"])
            except KeyError as exc:
                raise DataError(f"{at}: missing {exc.args[0]!r}") from None
            except (TypeError, ValueError):
                raise DataError(f"{at}: start and end must be seconds, got {row.get('start')!r}, {row.get('end')!r}") from None
            if not (0 <= start <= end):
                raise DataError(f"{at}: expected 0 <= start <= end, got start {start}, end {end}")
            speaker = row.get("speaker")
            speaker = str(speaker).strip() if speaker not in (None, "") else None
            segments.append(Segment(start, end, speaker or None, str(row.get("text") or "").strip()))
        return cls(segments)

    def join(self, start: float, end: float) -> tuple[str | None, str | None]:
        """(the text of the segments overlapping [start, end), in order; the speaker with the most time in it)."""
        while self._first < len(self.segments) and self.segments[self._first].end <= start:
            self._first += 1
        last = bisect.bisect_left(self._starts, end)
        texts: list[str] = []
        talk: dict[str, float] = {}
        for seg in self.segments[self._first:last]:
            overlap = min(end, seg.end) - max(start, seg.start)
            if overlap <= 0 and not (seg.start == seg.end and start <= seg.start < end):
                continue
            if seg.text:
                texts.append(seg.text)
            if seg.speaker is not None:
                talk[seg.speaker] = talk.get(seg.speaker, 0.0) + max(overlap, 0.0)
        speaker = max(talk, key=lambda s: talk[s]) if talk else None
        return (" ".join(texts) or None), speaker
