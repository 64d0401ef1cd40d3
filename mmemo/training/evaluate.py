"""``mmemo evaluate``: a run's dev-selected model on one split, and the evaluation files every run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mmemo.config import load_config
from mmemo.data.dataset import Collator, EmotionDataset, MediaReport
from mmemo.data.examples import Example
from mmemo.data.loading import load_splits
from mmemo.errors import DataError
from mmemo.labels import LabelSet
from mmemo.models.card import update_model_card_metrics
from mmemo.models.encoders.base import fit_processors
from mmemo.models.model import WEIGHTS_NAME, EmotionModel, load_saved_config
from mmemo.models.prediction import predict_batches
from mmemo.training.metrics import compute_metrics, format_table, plot_confusion


def write_eval_files(run_dir: Path, split: str, metrics: dict, label_set: LabelSet, examples: list[Example],
                     y_pred: list[int], probs: list[list[float]], index: list[int]) -> None:
    """``eval_<split>.json``, ``confusion_<split>.png`` and ``predictions_<split>.csv`` (one row per example); the
    metrics join the model card of the run's ``best/`` (or of ``run_dir`` itself when it is a saved model)."""
    (run_dir / f"eval_{split}.json").write_text(json.dumps({"split": split, "labels": list(label_set.names), **metrics}, indent=2))
    model_dir = run_dir / "best" if (run_dir / "best" / WEIGHTS_NAME).exists() else run_dir
    if (model_dir / WEIGHTS_NAME).exists():
        update_model_card_metrics(model_dir, load_saved_config(model_dir), label_set, {split: metrics})
    plot_confusion(metrics["confusion"], label_set.names, run_dir / f"confusion_{split}.png", title=f"{split} (n={metrics['n']})")
    with open(run_dir / f"predictions_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "prediction", *[f"p_{n}" for n in label_set.names]])
        for i, pred, p in sorted(zip(index, y_pred, probs)):
            w.writerow([examples[i].id, examples[i].label, label_set.names[pred], *[f"{x:.4f}" for x in p]])


def evaluate(run: str | Path, split: str = "dev", batch_size: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a run's dev-selected model (``RUN/best``) on one split; writes ``eval_<split>.json``."""
    from tqdm.auto import tqdm

    run = Path(run)
    model_dir = run / "best" if (run / "best").exists() else run
    model, config, label_set = EmotionModel.from_pretrained(model_dir)
    run_config = load_config(run / "config.yaml") if (run / "config.yaml").exists() else config
    run_config.data.labels = list(label_set.names)
    splits, _ = load_splits(run_config)
    if split not in splits:
        raise DataError(f"split '{split}' is missing or empty (splits found: {', '.join(splits.names())})")
    processors = {m: type(enc).build_processor(config.model.encoders[m], config.data, model_dir)
                  for m, enc in model.encoders.items()}
    fit_processors(processors, splits)
    examples = splits[split]
    loader = DataLoader(EmotionDataset(examples, processors, label_set), batch_size=batch_size or config.train.batch_size,
                        collate_fn=Collator(processors), num_workers=run_config.data.num_workers)
    report = MediaReport()
    y_true, y_pred, probs, index = [], [], [], []
    for batch, out in predict_batches(model, tqdm(loader, desc=f"evaluate {split}", leave=False, disable=not progress)):
        report.add(batch["issues"])
        y_true += batch["labels"].tolist()
        y_pred += out.probs.argmax(-1).tolist()
        probs += out.probs.tolist()
        index += batch["index"].tolist()
    metrics = compute_metrics(y_true, y_pred, label_set.names)
    if run.is_dir():
        write_eval_files(run, split, metrics, label_set, examples, y_pred, probs, index)
    metrics["media_issues"] = report.counts()
    print(format_table(metrics, label_set.names, title=f"{run} on {split}"))
    return metrics
