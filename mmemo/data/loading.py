"""From a config to labelled examples per split: the registered reader reads, labels are mapped and checked,
auxiliary corpora join the train split, and dialogue context is attached (here, and nowhere else).

The same path serves prediction over a manifest (``examples_to_predict``), so a model reads its inputs' context
exactly as it was trained to.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from mmemo.config import Config, DataConfig, ModelConfig
from mmemo.data.context import attach_context
from mmemo.data.examples import Example, Splits
from mmemo.data.readers.manifest import read_manifest_file
from mmemo.errors import DataError
from mmemo.labels import LabelSet, get_label_set
from mmemo.registry import READERS

log = logging.getLogger(__name__)


def label_set_from_config(data: DataConfig) -> LabelSet:
    return get_label_set(data.label_set, data.labels)


def read_source(data: DataConfig) -> Splits:
    """The examples of every split the configured reader finds, labels as written."""
    return READERS.get(data.source).obj(data)


def context_window(model: ModelConfig) -> tuple[int, int]:
    """How many turns before and after the utterance the text encoder reads (0, 0 without text)."""
    text = model.encoders.get("text") if "text" in model.modalities else None
    return getattr(text, "context_turns", 0), getattr(text, "future_turns", 0)


def with_context(examples: list[Example], model: ModelConfig) -> list[Example]:
    """Copies of ``examples`` with the dialogue context the model's text encoder reads."""
    return attach_context(examples, *context_window(model))


def apply_labels(examples: list[Example], label_set: LabelSet, label_map: dict[str, str | None], split: str) -> list[Example]:
    """Map raw labels, drop those mapped to null, and fail on a label outside the label set."""
    lowered = {k.strip().lower(): v for k, v in label_map.items()}
    kept, dropped = [], Counter()
    for ex in examples:
        raw = ex.label
        if raw is not None and raw.strip().lower() in lowered:
            mapped = lowered[raw.strip().lower()]
            if mapped is None:
                dropped[raw] += 1
                continue
            ex.label = mapped
        if ex.label is None:
            raise DataError(f"{ex.meta.get('source', ex.id)}: empty label in split {split}")
        label_set.index(ex.label, where=f"{ex.meta.get('source', ex.id)} (split {split})")
        ex.label = label_set.names[label_set.index(ex.label)]
        kept.append(ex)
    if dropped:
        log.info("split %s: dropped by label_map: %s", split, dict(dropped))
    return kept


def load_splits(config: Config) -> tuple[Splits, LabelSet]:
    """Examples for every split the source has, labels checked, auxiliary corpora joined, context attached."""
    data = config.data
    label_set = label_set_from_config(data)
    splits = read_source(data)
    corpora: dict[str, list[Example]] = {name: apply_labels(examples, label_set, data.label_map, name)
                                         for name, examples in splits.splits.items()}
    auxiliary: list[list[Example]] = []
    if data.auxiliary:
        held_out = {episode(ex) for name, examples in corpora.items() if name != "train" for ex in examples}
        held_out.discard(None)
        auxiliary = [auxiliary_examples(name, aux, held_out, label_set) for name, aux in data.auxiliary.items()]
    out = {}
    for name, examples in corpora.items():
        examples = with_context(examples, config.model)
        out[name] = examples[: data.max_examples] if data.max_examples is not None else examples
    for aux, extra in zip(data.auxiliary.values(), auxiliary):
        extra = with_context(extra, config.model)
        out["train"] = out.get("train", []) + (extra[: aux.max_examples] if aux.max_examples is not None else extra)
    return Splits(out), label_set


def examples_to_predict(path: str | Path, config: Config, columns: dict[str, str] | None = None) -> list[Example]:
    """Every row of a CSV/JSONL manifest as an example to predict on (no label needed), with the dialogue
    context the model reads."""
    examples = [ex for _, ex in read_manifest_file(path, columns, require_label=False)]
    return with_context(examples, config.model)


def episode(ex: Example) -> tuple[int, int] | None:
    """``(season, episode)`` of a *Friends* utterance (MELD, EmoryNLP), or None where the reader has none."""
    try:
        return int(ex.meta["season"]), int(ex.meta["episode"])
    except (KeyError, TypeError, ValueError):
        return None


def auxiliary_examples(name: str, data: DataConfig, held_out: set, main_labels: LabelSet | None = None) -> list[Example]:
    """The train split of auxiliary corpus ``name`` (``data.auxiliary``), its labels moved to ``meta[name]``:
    the target of that corpus's own head. Its examples carry no emotion label, so the emotion head's loss
    skips them, except those whose label ``data.main_label_map`` maps onto one of ``main_labels``. Those from
    an episode in ``held_out`` (the main corpus's dev and test) are left out, so that no scene the model is
    selected or tested on is trained on through the other corpus."""
    where = f"data.auxiliary.{name}"
    splits = read_source(data)
    if "train" not in splits:
        raise DataError(f"{where}: no train split (splits found: {', '.join(splits.names()) or 'none'})")
    examples = apply_labels(splits["train"], label_set_from_config(data), data.label_map, f"train of {where}")
    kept = [ex for ex in examples if episode(ex) not in held_out]
    log.info("%s: %d training examples; %d left out from %d episodes of the main corpus's dev/test splits", where,
             len(kept), len(examples) - len(kept), len({episode(ex) for ex in examples} & held_out))
    to_main = {str(k).strip().lower(): v for k, v in data.main_label_map.items()}
    if to_main and main_labels is None:
        raise DataError(f"{where}.main_label_map: needs the main corpus's label set")
    for ex in kept:
        ex.meta.update({name: ex.label, "corpus": name})
        main = to_main.get(str(ex.label).strip().lower())
        ex.label = main_labels.names[main_labels.index(main, where=f"{where}.main_label_map")] if main else None
        ex.id = f"{name}/{ex.id}"
        ex.dialogue_id = f"{name}/{ex.dialogue_id}" if ex.dialogue_id is not None else None
    return kept
