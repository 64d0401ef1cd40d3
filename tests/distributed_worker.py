"""Run by test_distributed.py in each of two processes under ``accelerate launch``: train a tiny text+audio
model (text frozen, so its embedding cache is built by the main process and read by both) and record what
this process ends training with."""

import json
import sys
from pathlib import Path

from mmemo.config import load_config
from mmemo.training.cache import weights_digest
from mmemo.training.trainer import Trainer
from tests.conftest import tiny_overrides


def main() -> None:
    demo, run_dir, out = map(Path, sys.argv[1:4])
    cfg = tiny_overrides(demo, ("text", "audio"), train__epochs=2, train__eval_batch_size=3, data__max_examples=7)
    cfg["model"]["encoders"]["text"]["freeze"] = True
    trainer = Trainer(load_config(None, cfg), run_dir=run_dir)
    finish = trainer.finish

    def record_then_finish():  # before finish() loads the saved best weights into every process
        acc = trainer.accelerator
        (out / f"rank{acc.process_index}.json").write_text(json.dumps({
            "world": acc.num_processes, "backend": str(acc.state.backend), "weights": weights_digest(trainer.unwrapped),
            "text_input": type(trainer.processors["text"]).__name__, "train_batches": len(trainer.train_loader)}))
        return finish()

    trainer.finish = record_then_finish
    trainer.fit()


if __name__ == "__main__":
    main()
