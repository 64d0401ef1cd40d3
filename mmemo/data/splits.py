"""Train/dev/test splits for data that comes without them (``data.split``): random, stratified by label, and
speaker- or dialogue-disjoint, by scikit-learn's splitters; or the assignment an earlier run wrote.

A run writes the assignment it used to ``splits.csv`` (id, split) in its folder; ``data.split.file`` reads it
back, so that a comparison trains and tests on the same examples.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mmemo.data.examples import Example, Splits
from mmemo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"


@dataclass
class SplitConfig:
    """How ``data.split`` divides a source's examples into train, dev and test."""

    by: Literal["none", "speaker", "dialogue"] = "none"  # keep each speaker's (dialogue's) examples in one split
    dev: float = 0.1  # the share of examples (of groups, with by) held out for dev
    test: float = 0.1  # the share held out for test; 0: no test split
    stratify: bool = True  # keep the label distribution alike across splits (StratifiedShuffleSplit/StratifiedGroupKFold)
    seed: int = 0  # the splitters' random state
    file: str | None = None  # a splits.csv a run wrote (id, split): reuse its assignment instead of drawing one

    def validate(self, key: str) -> None:
        for name in ("dev", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key}.{name}: a share in [0, 1), got {value}")
        if self.dev <= 0 and self.file is None:
            raise ConfigError(f"{key}.dev: must be > 0 (training selects its epoch on dev)")
        if self.dev + self.test >= 1.0:
            raise ConfigError(f"{key}: dev + test = {self.dev + self.test:g} leaves nothing to train on")


def _group(ex: Example, by: str) -> str | None:
    return {"speaker": ex.speaker, "dialogue": ex.dialogue_id}.get(by, ex.id)


def _hold_out(examples: list[Example], share: float, config: SplitConfig, seed: int) -> tuple[list[int], list[int]]:
    """Indices (kept, held out), the held-out part about ``share`` of the examples (of the groups, with ``by``)."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, StratifiedShuffleSplit

    index = np.arange(len(examples))
    labels = np.array([ex.label or "" for ex in examples])
    grouped = config.by != "none"
    groups = np.array([_group(ex, config.by) for ex in examples]) if grouped else None
    counts = Counter(labels.tolist())
    stratify = config.stratify and len(counts) > 1
    if stratify and not grouped and min(counts.values()) < 2:
        log.warning("data.split: class(es) %s have a single example; splitting without stratification",
                    ", ".join(sorted(k for k, v in counts.items() if v < 2)))
        stratify = False
    if grouped and stratify:
        n_splits = max(2, round(1 / share))
        if len(set(groups.tolist())) < n_splits:
            raise DataError(f"data.split: {len(set(groups.tolist()))} {config.by}s cannot be split into shares of "
                            f"{share:g}; lower the share or use by: none")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        kept, held = next(splitter.split(index, labels, groups))
    elif grouped:
        kept, held = next(GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed).split(index, groups=groups))
    elif stratify:
        n_held = max(len(counts), round(share * len(index)))
        kept, held = next(StratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed).split(index, labels))
    else:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(index))
        n_held = max(1, round(share * len(index)))
        held, kept = np.sort(order[:n_held]), np.sort(order[n_held:])
    return sorted(kept.tolist()), sorted(held.tolist())


def split_examples(examples: list[Example], config: SplitConfig) -> Splits:
    """``examples`` divided into train, dev and test as ``config`` asks."""
    if config.file:
        return read_split_file(examples, config.file)
    if config.by != "none":
        missing = [ex.id for ex in examples if _group(ex, config.by) is None]
        if missing:
            raise DataError(f"data.split.by: {config.by}, but {len(missing)} example(s) have no {config.by} (first: "
                            f"{missing[0]}); map data.columns.{config.by} or use by: none")
    out: dict[str, list[Example]] = {}
    rest = examples
    if config.test > 0:
        kept, held = _hold_out(rest, config.test, config, config.seed)
        out["test"] = [rest[i] for i in held]
        rest = [rest[i] for i in kept]
    # dev's share of what test left, so that both are shares of the whole
    kept, held = _hold_out(rest, config.dev / (1.0 - config.test), config, config.seed + 1)
    out = {"train": [rest[i] for i in kept], "dev": [rest[i] for i in held], **out}
    log.info("data.split (by %s%s, seed %d): %s", config.by, ", stratified" if config.stratify else "", config.seed,
             ", ".join(f"{k} {len(v)}" for k, v in out.items()))
    return Splits(out)


def read_split_file(examples: list[Example], path: str | Path) -> Splits:
    """The assignment a run wrote (``splits.csv``): every example must be in it, by id."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLITS_FILE
    if not path.is_file():
        raise DataError(f"data.split.file: {path} not found (a run folder's {SPLITS_FILE})")
    with open(path, newline="", encoding="utf-8") as f:
        assigned = {row["id"]: row["split"] for row in csv.DictReader(f)}
    out: dict[str, list[Example]] = {}
    unknown = [ex.id for ex in examples if ex.id not in assigned]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} example(s) are not in it (first: {unknown[0]}); the data changed "
                        "since the run that wrote it")
    for ex in examples:
        out.setdefault(assigned[ex.id], []).append(ex)
    return Splits(out)


def write_split_file(splits: Splits, run_dir: str | Path) -> Path:
    """``splits.csv`` (id, split) in ``run_dir``: which split each example was in."""
    path = Path(run_dir) / SPLITS_FILE
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split"])
        for name in splits.names():
            for ex in splits[name]:
                writer.writerow([ex.id, name])
    return path


__all__ = ["SplitConfig", "split_examples", "read_split_file", "write_split_file", "SPLITS_FILE"]
