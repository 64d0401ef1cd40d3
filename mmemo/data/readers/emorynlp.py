"""The EmoryNLP reader (Zahiri & Choi, 2018): *Friends* scenes with seven emotions of their own, as the MELD
repository distributes them (``emorynlp_{train,dev,test}_final.csv``). Text only: its clips are not public.

A dialogue is one scene of one episode; speakers are written as a Python list (``['Monica Geller']``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mmemo.config import DataConfig
from mmemo.data.examples import Example, Splits
from mmemo.data.readers.meld import parse_timestamp
from mmemo.data.tables import read_table
from mmemo.errors import DataError
from mmemo.registry import register_reader


@dataclass
class EmoryNLPConfig(DataConfig):
    """EmoryNLP: ``root`` holds emorynlp_{train,dev,test}_final.csv."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)

    source: str = "emorynlp"
    root: str = "data/emorynlp"  # the folder with emorynlp_train_final.csv, emorynlp_dev_final.csv, ...
    label_set: str = "emorynlp7"


SPLITS = {"train": "emorynlp_train_final.csv", "dev": "emorynlp_dev_final.csv", "test": "emorynlp_test_final.csv"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")


def parse_speakers(value: str) -> str | None:
    """``['Ross Geller', 'Joey Tribbiani']`` -> ``Ross Geller and Joey Tribbiani``; a plain name stays as it is."""
    value = (value or "").strip()
    if value.startswith("["):
        try:
            names = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, list):
            names = [str(n).strip() for n in names if str(n).strip()]
            return " and ".join(names) or None
    return value or None


def read_emorynlp_csv(path: Path, split: str) -> list[Example]:
    examples, seen = [], {}
    for lineno, row in read_table(path, REQUIRED_COLUMNS).rows:
        where = f"{path}: line {lineno}"
        try:
            season, episode, scene, utt = (int(row[c]) for c in ("Season", "Episode", "Scene_ID", "Utterance_ID"))
        except ValueError:
            raise DataError(f"{where}: Season, Episode, Scene_ID and Utterance_ID must be integers, got "
                            f"{[row[c] for c in ('Season', 'Episode', 'Scene_ID', 'Utterance_ID')]}") from None
        dialogue = f"{split}/s{season}e{episode}c{scene}"
        ex_id = f"{dialogue}u{utt}"
        if ex_id in seen:
            raise DataError(f"{where}: duplicate Season/Episode/Scene_ID/Utterance_ID {ex_id} (first on line {seen[ex_id]})")
        seen[ex_id] = lineno
        meta = {"source": where, "split": split, "season": str(season), "episode": str(episode), "emotion": row["Emotion"]}
        for key, col in (("start", "Start_Time"), ("end", "End_Time")):
            if col in row:
                meta[key] = parse_timestamp(row[col])
        examples.append(Example(id=ex_id, label=row["Emotion"] or None, text=row["Utterance"],
                                speaker=parse_speakers(row["Speaker"]), dialogue_id=dialogue, utterance_id=utt, meta=meta))
    return examples


def read_emorynlp(root: str | Path) -> Splits:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: EmoryNLP folder not found (expected {', '.join(SPLITS.values())})")
    out = {split: read_emorynlp_csv(root / name, split) for split, name in SPLITS.items() if (root / name).exists()}
    if "train" not in out:
        raise DataError(f"{root}: {SPLITS['train']} not found")
    return Splits(out)


@register_reader("emorynlp", config=EmoryNLPConfig)
def read(config: EmoryNLPConfig) -> Splits:
    """EmoryNLP (Zahiri & Choi, 2018): Friends scenes, seven emotions of its own, text only."""
    return read_emorynlp(config.root)
