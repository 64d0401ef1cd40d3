"""The MELD.Raw reader: the three CSVs plus ``dia{D}_utt{U}.mp4`` clips, with MELD's real quirks handled.

Quirks (see shared/data/meld/SOURCE.md): legacy cp1252 bytes, timestamps with and without the hour's
leading zero, gaps in utterance ids, duplicate ``Sr No.``. Works with the CSVs alone (text-only runs).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mmemo.config import DataConfig
from mmemo.data.examples import Example, Splits
from mmemo.data.tables import read_table
from mmemo.errors import DataError
from mmemo.registry import register_reader

log = logging.getLogger(__name__)

@dataclass
class MeldConfig(DataConfig):
    """MELD.Raw: ``root`` holds the three CSVs and the clip folders (directly or one level down)."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)

    source: str = "meld"
    root: str = "data/MELD.Raw"  # the folder with train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv and the clips
    label_column: str | None = None  # default: Emotion (Sentiment with label_set meld_sentiment)


SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Dialogue_ID", "Utterance_ID")
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})\s*$")


def parse_timestamp(value: str) -> float | None:
    """``0:13:40,766`` and ``00:13:40,766`` (and EmoryNLP's ``00:13:40.766``) to seconds."""
    m = _TIME.match(value or "")
    if not m:
        return None
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _find(root: Path, name: str) -> Path | None:
    """``root/name``, or ``root/*/name`` as MELD.Raw's tarballs extract (``train/train_splits``)."""
    direct = root / name
    if direct.exists():
        return direct
    for candidate in sorted(root.glob(f"*/{name}")):
        return candidate
    return None


def read_meld_csv(path: Path, split: str, clip_dir: Path | None, label_column: str = "Emotion") -> list[Example]:
    rows = read_table(path, REQUIRED_COLUMNS + (label_column,)).rows
    examples = []
    for lineno, row in rows:
        where = f"{path}: line {lineno}"
        try:
            dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except ValueError:
            raise DataError(f"{where}: Dialogue_ID/Utterance_ID must be integers, got "
                            f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}") from None
        clip = str(clip_dir / f"dia{dia}_utt{utt}.mp4") if clip_dir is not None else None
        meta = {"source": where, "split": split}
        for key, col in (("start", "StartTime"), ("end", "EndTime")):
            if col in row:
                meta[key] = parse_timestamp(row[col])
        for col in ("Season", "Episode", "Sentiment", "Emotion", "Sr No."):
            if col in row:
                meta[col.lower().replace(" ", "_").replace(".", "")] = row[col]
        examples.append(
            Example(
                id=f"{split}/dia{dia}_utt{utt}",
                label=row[label_column] or None,
                text=row["Utterance"],
                audio=clip,
                video=clip,
                speaker=row["Speaker"] or None,
                dialogue_id=f"{split}/{dia}",
                utterance_id=utt,
                meta=meta,
            )
        )
    seen: dict[str, str] = {}
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"{ex.meta['source']}: duplicate Dialogue_ID/Utterance_ID {ex.id} (first at {seen[ex.id]})")
        seen[ex.id] = ex.meta["source"]
    return examples


def read_meld(root: str | Path, label_column: str = "Emotion", splits: tuple[str, ...] = ("train", "dev", "test")) -> Splits:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: MELD root folder not found (expected train_sent_emo.csv, dev_sent_emo.csv, ...)")
    out: dict[str, list[Example]] = {}
    for split in splits:
        csv_name, clip_name = SPLITS[split]
        csv_path = _find(root, csv_name)
        if csv_path is None:
            if split != "test":
                log.warning("MELD: %s not found under %s; split %s is empty", csv_name, root, split)
            continue
        clip_dir = _find(root, clip_name)
        if clip_dir is None:
            # Keep the expected paths: a run that asks for audio or vision then reports every clip as
            # missing instead of silently training on text alone.
            log.info("MELD: no %s folder under %s; %s clips will be reported missing if used", clip_name, root, split)
            clip_dir = root / clip_name
        out[split] = read_meld_csv(csv_path, split, clip_dir, label_column)
    if not out:
        raise DataError(f"{root}: no MELD CSV found (expected {', '.join(v[0] for v in SPLITS.values())})")
    return Splits(out)


@register_reader("meld", config=MeldConfig)
def read(config: MeldConfig) -> Splits:
    """MELD.Raw (Poria et al., ACL 2019): three CSVs and dia{D}_utt{U}.mp4 clips; text-only with the CSVs alone."""
    column = config.label_column or ("Sentiment" if config.label_set == "meld_sentiment" else "Emotion")
    return read_meld(config.root, label_column=column)
