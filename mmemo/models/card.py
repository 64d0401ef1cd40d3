"""The model card of a saved model: ``README.md``, written with huggingface_hub's ``ModelCard``.

Its YAML header is what the Hugging Face Hub shows and filters on (``library_name: mmemo``, tags, the
pipeline tag of a one-modality model, the evaluation results as ``model-index``), plus mmemo's own keys:
``labels``, ``modalities``, ``encoders``, ``fusion``, ``training_data`` and ``mmemo_metrics`` (split ->
accuracy, weighted_f1, macro_f1, uar, n, in percent), which ``read_model_card`` gives back. The card
never affects loading: a folder without one, or with a damaged one, loads all the same.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from mmemo.config import Config
from mmemo.labels import LabelSet

log = logging.getLogger("mmemo")

CARD_NAME = "README.md"
CARD_METRICS = ("accuracy", "weighted_f1", "macro_f1", "uar", "n", "epoch")
_PIPELINE_TAGS = {"text": "text-classification", "audio": "audio-classification", "vision": "image-classification"}
_DATA_NAMES = {"meld": "MELD", "emorynlp": "EmoryNLP"}
_ENCODER_SOURCE = ("checkpoint", "model_type", "backbone")  # the field that says what an encoder was built from


def describe_encoders(config: Config) -> dict[str, dict[str, Any]]:
    """modality -> {name, and what it was built from (a checkpoint, a model type or a backbone)}. A saved
    config's checkpoint points inside the saved folder (``encoders/text``): that says nothing, and is left out."""
    out = {}
    for m in config.model.modalities:
        enc = config.model.encoders[m]
        info: dict[str, Any] = {"name": enc.name}
        for key in _ENCODER_SOURCE:
            value = getattr(enc, key, None)
            if isinstance(value, str) and value and not value.startswith("encoders/"):
                info[key] = value
                break
        out[m] = info
    return out


def training_data_name(config: Config) -> str:
    """The training data's name: the corpus, and the folder or table it was read from (``MELD (demo_data)``)."""
    data = config.data
    where = getattr(data, "root", None) or getattr(data, "path", None) or getattr(data, "dataset", None)
    name = _DATA_NAMES.get(data.source, data.source)
    return f"{name} ({Path(str(where)).name})" if where else name


def card_metadata(config: Config, label_set: LabelSet, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's mmemo keys from the config; ``overrides`` (say, those of the card the model was loaded with,
    whose encoders still name their original checkpoints) take precedence, and ``metrics`` merge by split."""
    overrides = dict(overrides or {})
    meta: dict[str, Any] = {
        "name": config.name,
        "labels": list(label_set.names),
        "modalities": list(config.model.modalities),
        "encoders": describe_encoders(config),
        "fusion": config.model.fusion.name,
        "training_data": training_data_name(config),
        "metrics": {},
    }
    metrics = overrides.pop("metrics", None) or {}
    for key, value in overrides.items():
        if value is not None and key in meta:
            meta[key] = value
    meta["metrics"] = {split: _headline(m) for split, m in metrics.items() if m}
    return meta


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in CARD_METRICS if metrics.get(k) is not None}


def build_model_card(meta: dict[str, Any]):
    """A ``huggingface_hub.ModelCard`` from ``card_metadata``'s dict."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    modalities = meta["modalities"]
    tags = ["mmemo", "emotion-recognition", *(["multimodal"] if len(modalities) > 1 else []), *modalities]
    results = [
        EvalResult(task_type="emotion-recognition", task_name="Emotion recognition", dataset_type=_slug(meta["training_data"]),
                   dataset_name=meta["training_data"], dataset_split=split, metric_type=key,
                   metric_name=f"{split} {key.replace('_', ' ')}", metric_value=value)
        for split, m in meta["metrics"].items() for key, value in m.items() if key in ("accuracy", "weighted_f1", "macro_f1")
    ]
    data = ModelCardData(
        library_name="mmemo",
        tags=tags,
        pipeline_tag=_PIPELINE_TAGS.get(modalities[0]) if len(modalities) == 1 else None,
        model_name=meta["name"],
        eval_results=results or None,
        labels=meta["labels"],
        modalities=modalities,
        encoders=meta["encoders"],
        fusion=meta["fusion"],
        training_data=meta["training_data"],
        mmemo_metrics=meta["metrics"] or None,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(meta)}")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def _body(meta: dict[str, Any]) -> str:
    encoders = "\n".join(f"| {m} | {e['name']} | {next((e[k] for k in _ENCODER_SOURCE if k in e), '')} |"
                         for m, e in meta["encoders"].items())
    lines = [
        f"# {meta['name']}",
        "",
        f"An [mmemo](https://pypi.org/project/mmemo/) emotion recognition model: {', '.join(meta['modalities'])} "
        f"encoders, {meta['fusion']} fusion and one softmax head over {len(meta['labels'])} classes, trained on "
        f"{meta['training_data']}.",
        "",
        f"**Labels:** {', '.join(meta['labels'])}",
        "",
        "| modality | encoder | built from |",
        "|---|---|---|",
        encoders,
        "",
        "## Evaluation",
        "",
    ]
    if meta["metrics"]:
        lines += ["| split | n | accuracy | weighted F1 | macro F1 | UAR |", "|---|---|---|---|---|---|"]
        for split, m in meta["metrics"].items():
            cells = [str(m.get("n", ""))] + [f"{m[k]:.2f}" if k in m else "" for k in ("accuracy", "weighted_f1",
                                                                                      "macro_f1", "uar")]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
        lines += ["", "In percent. The checkpoint was selected on dev; test, when given, was evaluated once."]
    else:
        lines.append("No evaluation results were recorded with this model.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from mmemo import EmotionRecognizer",
        "",
        "recognizer = EmotionRecognizer.from_pretrained(\"path/or/hub-id\")",
        f"print(recognizer.predict({_example_inputs(meta['modalities'])}).label)",
        "```",
        "",
        "or `mmemo serve path/or/hub-id` for an HTTP API and a page to try it.",
        "",
    ]
    return "\n".join(lines)


def _example_inputs(modalities: list[str]) -> str:
    args = {"text": 'text="Oh my god, really?"', "audio": 'audio="clip.wav"', "vision": 'video="clip.mp4"'}
    if "vision" in modalities and "audio" in modalities:  # the video's audio track is the audio input
        modalities = [m for m in modalities if m != "audio"]
    return ", ".join(args[m] for m in modalities)


def write_model_card(directory: str | Path, config: Config, label_set: LabelSet,
                     overrides: dict[str, Any] | None = None) -> Path:
    """Write ``directory/README.md`` (atomically) from the config, the labels and ``overrides`` (``metrics``:
    split -> metrics; ``encoders``, ``training_data``, ... as ``read_model_card`` returns them)."""
    path = Path(directory) / CARD_NAME
    _write_atomic(path, str(build_model_card(card_metadata(config, label_set, overrides))))
    return path


def read_model_card(directory: str | Path) -> dict[str, Any]:
    """The mmemo keys of ``directory/README.md`` (``metrics`` for ``mmemo_metrics``); ``{}`` without a card,
    and with a damaged one (a warning: the card describes the model, the model does not need it)."""
    path = Path(directory) / CARD_NAME
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception as exc:  # noqa: BLE001 - a hand-edited card must not stop a model from loading
        log.warning("%s: model card not readable (%s: %s); ignored", path, type(exc).__name__, exc)
        return {}
    meta = {k: data[k] for k in ("labels", "modalities", "encoders", "fusion", "training_data") if k in data}
    meta["name"] = data.get("model_name")
    metrics = data.get("mmemo_metrics")
    meta["metrics"] = metrics if isinstance(metrics, dict) else {}
    return {k: v for k, v in meta.items() if v is not None}


def update_model_card_metrics(directory: str | Path, config: Config, label_set: LabelSet,
                              metrics: dict[str, dict[str, Any]]) -> Path:
    """Add or replace the metrics of some splits in ``directory``'s card, keeping the others."""
    previous = read_model_card(directory)
    merged = {**previous.get("metrics", {})}
    for split, m in metrics.items():
        merged[split] = {**merged.get(split, {}), **_headline(m)}
    return write_model_card(directory, config, label_set, {**previous, "metrics": merged})


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
