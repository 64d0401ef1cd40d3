"""Datasets built offline from the demo tree, for the datasets (hf) reader's tests and the benchmark's."""

from __future__ import annotations

from pathlib import Path

from mmemo.data.demo import EMOTIONS
from mmemo.data.readers.meld import read_meld

HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def demo_rows(root: Path, split: str) -> list[dict]:
    """One dict per MELD example of the demo tree: text, clip path (None when the file is gone), label, speaker."""
    return [{"id": ex.id, "text": ex.text, "clip": ex.video if Path(ex.video).exists() else None, "label": ex.label,
             "speaker": ex.speaker, "dialogue": ex.dialogue_id, "utterance": ex.utterance_id}
            for ex in read_meld(root)[split]]


def demo_dataset_dict(root: Path, *, video_bytes: bool = False):
    """The demo tree as a DatasetDict (train/validation/test): a Video column (paths, or the files' bytes), a
    ClassLabel ``emotion``, and a column mmemo does not read."""
    import datasets

    features = datasets.Features({"id": datasets.Value("string"), "utterance_text": datasets.Value("string"),
                                  "clip": datasets.Video(), "emotion": datasets.ClassLabel(names=list(EMOTIONS)),
                                  "speaker": datasets.Value("string"), "unused": datasets.Value("int64")})
    out = {}
    for split, name in HF_SPLITS.items():
        rows = demo_rows(root, split)
        clips = [({"path": Path(r["clip"]).name, "bytes": Path(r["clip"]).read_bytes()} if video_bytes else r["clip"])
                 if r["clip"] else None for r in rows]
        out[name] = datasets.Dataset.from_dict(
            {"id": [r["id"] for r in rows], "utterance_text": [r["text"] for r in rows], "clip": clips,
             "emotion": [EMOTIONS.index(r["label"]) for r in rows], "speaker": [r["speaker"] for r in rows],
             "unused": list(range(len(rows)))}, features=features)
    return datasets.DatasetDict(out)


HF_COLUMNS = {"text": "utterance_text", "video": "clip", "label": "emotion"}
