"""From a config to labelled examples per split: read the source, map labels, attach context."""

from __future__ import annotations

import logging
from collections import Counter

from mmemo.config import Config, DataConfig
from mmemo.data.context import attach_context
from mmemo.data.emorynlp import read_emorynlp
from mmemo.data.examples import Example, Splits
from mmemo.data.manifest import read_manifest
from mmemo.data.meld import read_meld
from mmemo.data.tables import DataError
from mmemo.labels import LabelSet, get_label_set

log = logging.getLogger(__name__)


def label_set_from_config(data: DataConfig) -> LabelSet:
    return get_label_set(data.label_set, data.labels)


def read_source(data: DataConfig) -> Splits:
    if data.source == "meld":
        column = data.label_column or ("Sentiment" if data.label_set == "meld_sentiment" else "Emotion")
        return read_meld(data.root, label_column=column)
    if data.source == "emorynlp":
        return read_emorynlp(data.root)
    if data.source == "manifest":
        m = data.manifest
        columns = dict(m.columns)
        if data.label_column:
            columns["label"] = data.label_column
        return read_manifest(m.path, m.paths, columns, m.split_column, m.splits)
    raise DataError(f"data.source: unknown source '{data.source}'")


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
    """Examples for every split the source has, labels checked, dialogue context attached."""
    data = config.data
    label_set = label_set_from_config(data)
    splits = read_source(data)
    text_cfg = config.model.encoders.get("text") if "text" in config.model.modalities else None
    past = getattr(text_cfg, "context_turns", 0) if text_cfg is not None else 0
    future = getattr(text_cfg, "future_turns", 0) if text_cfg is not None else 0
    out = {}
    for name, examples in splits.splits.items():
        examples = apply_labels(examples, label_set, data.label_map, name)
        examples = attach_context(examples, past, future)
        if data.max_examples is not None:
            examples = examples[: data.max_examples]
        out[name] = examples
    if data.auxiliary:
        held_out = {episode(ex) for name, examples in splits.splits.items() if name != "train" for ex in examples}
        held_out.discard(None)
        for name, aux in data.auxiliary.items():
            out["train"] = out.get("train", []) + load_auxiliary(name, aux, held_out, past, future, label_set)
    return Splits(out), label_set


def episode(ex: Example) -> tuple[int, int] | None:
    """``(season, episode)`` of a *Friends* utterance (MELD, EmoryNLP), or None where the reader has none."""
    try:
        return int(ex.meta["season"]), int(ex.meta["episode"])
    except (KeyError, TypeError, ValueError):
        return None


def load_auxiliary(name: str, data: DataConfig, held_out: set, past: int, future: int,
                   main_labels: LabelSet | None = None) -> list[Example]:
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
    kept = attach_context(kept, past, future)
    return kept[: data.max_examples] if data.max_examples is not None else kept
