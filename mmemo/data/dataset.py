"""EmotionDataset and its collate: lazy decoding through each modality's Processor, in the workers.

A media file that cannot be used is recorded as a ``MediaIssue`` travelling with the batch (worker
processes cannot share state), and the modality is marked absent for that example.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mmemo.data.examples import Example
from mmemo.data.media import MediaError
from mmemo.labels import IGNORE, LabelSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaIssue:
    example_id: str
    modality: str
    path: str
    reason: str
    detail: str = ""


class EmotionDataset(Dataset):
    def __init__(self, examples: list[Example], processors: dict[str, Any], label_set: LabelSet | None = None):
        self.examples = examples
        self.processors = processors  # modality -> Processor, in the model's modality order
        self.label_set = label_set

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        inputs: dict[str, Any] = {}
        issues: list[MediaIssue] = []
        for modality, processor in self.processors.items():
            try:
                inputs[modality] = processor(ex)
                if isinstance(inputs[modality], dict) and "notes" in inputs[modality]:
                    notes = inputs[modality].pop("notes")
                    log.debug("%s %s: %s", ex.id, modality, "; ".join(notes))
            except MediaError as err:
                inputs[modality] = None
                issues.append(MediaIssue(ex.id, modality, err.path, err.reason, err.detail))
        label = IGNORE
        if self.label_set is not None and ex.label is not None:
            label = self.label_set.index(ex.label, where=ex.meta.get("source", ex.id))
        return {"index": index, "id": ex.id, "label": label, "inputs": inputs, "issues": issues}


class Collator:
    """Pads each modality over the examples that have it and builds ``present[B, M]``.

    ``inputs[m]`` holds only the rows where ``present[:, m]`` is true, so no encoder ever sees a
    placeholder for a missing input.
    """

    def __init__(self, processors: dict[str, Any]):
        self.processors = processors
        self.modalities = list(processors)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        present = torch.tensor(
            [[item["inputs"].get(m) is not None for m in self.modalities] for item in items], dtype=torch.bool
        ).reshape(len(items), len(self.modalities))
        inputs = {}
        for m in self.modalities:
            rows = [item["inputs"][m] for item in items if item["inputs"].get(m) is not None]
            if rows:
                inputs[m] = self.processors[m].collate(rows)
        return {
            "ids": [item["id"] for item in items],
            "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "present": present,
            "inputs": inputs,
            "issues": [issue for item in items for issue in item["issues"]],
        }


class MediaReport:
    """Unusable media seen during a run, each (example, modality) counted once, written to the run folder."""

    def __init__(self) -> None:
        self.issues: dict[tuple[str, str], MediaIssue] = {}

    def add(self, issues: list[MediaIssue]) -> None:
        for issue in issues:
            self.issues.setdefault((issue.example_id, issue.modality), issue)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{i.modality}: {i.reason}" for i in self.issues.values()))

    def __len__(self) -> int:
        return len(self.issues)

    def write(self, run_dir: Path) -> None:
        rows = sorted(self.issues.values(), key=lambda i: (i.example_id, i.modality))
        with open(run_dir / "media_issues.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["example_id", "modality", "path", "reason", "detail"])
            writer.writeheader()
            for issue in rows:
                writer.writerow(asdict(issue))
        (run_dir / "media_report.json").write_text(json.dumps({"total": len(rows), "by_reason": self.counts()}, indent=2))

    def summary(self) -> str:
        if not self.issues:
            return "media: every file decoded"
        parts = ", ".join(f"{k} x{v}" for k, v in sorted(self.counts().items()))
        return f"media: {len(self.issues)} unusable input(s), marked absent: {parts}"
