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
from mmemo.data.media import is_video_file
from mmemo.data.readers.manifest import read_manifest_file
from mmemo.errors import DataError
from mmemo.labels import LabelSet, get_label_set
from mmemo.registry import READERS

log = logging.getLogger(__name__)
# The Example fields each modality reads.
MODALITY_FIELDS = {"text": ("text",), "audio": ("audio",), "vision": ("video", "image")}


def label_set_from_config(data: DataConfig, splits: Splits | None = None) -> LabelSet:
    """The configured label set; with none configured, the classes the source declares (a ClassLabel's names),
    which are then written into ``data.labels`` so that the run's config and the saved model carry them."""
    if data.label_set is None and not data.labels:
        if splits is None or not splits.labels:
            raise DataError("data.label_set: none given, and the source declares no classes (no ClassLabel label "
                            "column); set data.label_set or data.labels")
        data.labels = list(splits.labels)
        log.info("labels from the source's ClassLabel column: %s", ", ".join(data.labels))
    return get_label_set(data.label_set, data.labels)


def video_feeds_audio(splits: Splits) -> Splits:
    """Each example's video file (or its bytes) also feeds the audio, its track, when the source gives no audio
    at all: a folder of clips with a ``video`` column trains on both, as ``predict`` reads them. A source with an
    audio column keeps it as it is; a model without audio never reads the field. The field is filled whatever the
    model's modalities, so that an example's embedding-cache key is the same in every run of an ablation."""
    every = [ex for name in splits.names() for ex in splits.splits[name]]
    if any(ex.audio is not None for ex in every):
        return splits
    for ex in every:
        if ex.video is not None and is_video_file(ex.video):
            ex.audio = ex.video
    splits.columns = {**splits.columns, "audio": f"the audio track of {_column(splits.columns, 'video')}"}
    return splits


def describe_inputs(splits: Splits, model: ModelConfig) -> str:
    """One line saying which column feeds each modality the model reads (and how many examples have it)."""
    every = [ex for name in splits.names() for ex in splits.splits[name]]
    cols = splits.columns
    parts = []
    for m in model.modalities:
        fields = MODALITY_FIELDS[m]
        used = [f for f in fields if any(getattr(ex, f) is not None for ex in every)]
        source = " + ".join(_column(cols, f) for f in used) or "nothing"
        count = sum(any(getattr(ex, f) is not None for f in fields) for ex in every)
        parts.append(f"{m} <- {source} ({count} of {len(every)} examples)")
    return "inputs: " + "; ".join(parts)


def _column(columns: dict[str, str], field: str) -> str:
    if field == "audio" and columns.get("audio", "").startswith("the audio track"):
        return columns["audio"]
    return f"column {columns[field]!r}" if field in columns else f"the {field} field"


def check_modalities(splits: Splits, model: ModelConfig, split: str = "train") -> None:
    """A modality the model reads that no example of ``split`` has is an error naming it: training it would
    leave its encoder untrained and the model silently ignoring that input."""
    examples = splits.splits.get(split, [])
    for m in model.modalities:
        if examples and not any(getattr(ex, f) is not None for ex in examples for f in MODALITY_FIELDS[m]):
            raise DataError(f"model.modalities: {m} has no {split} example (no {' or '.join(MODALITY_FIELDS[m])} in any "
                            f"row); map its column in data.columns, or leave {m} out of model.modalities")


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
    splits = video_feeds_audio(read_source(data))
    label_set = label_set_from_config(data, splits)
    log.info(describe_inputs(splits, config.model))
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
