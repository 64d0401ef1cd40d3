"""``metrics.jsonl`` (one line per evaluation: the run's source of truth) and the epoch's line on the console.

On resume the file is rewritten from the checkpoint's history, so it holds exactly the evaluations the
checkpoint knows, whatever was appended after it before the run stopped."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from mmemo.training.callbacks.base import Callback
from mmemo.training.metrics import format_metrics

if TYPE_CHECKING:
    from mmemo.training.trainer import Trainer


class MetricsLog(Callback):
    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.accelerator.is_main_process and trainer.resumed:
            path = trainer.run_dir / "metrics.jsonl"
            tmp = path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in trainer.state["history"]))
            os.replace(tmp, path)

    def on_evaluate(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.accelerator.is_main_process:
            return
        with open(trainer.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        t = trainer.config.train
        mark = " *" if record["best"] else ""
        trainer.print(f"epoch {record['epoch']}/{t.epochs}  loss {record['train_loss']:.4f}  "
                      f"{record['split']}: {format_metrics(record)}{mark}")
