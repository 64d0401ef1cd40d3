"""MELD text: how often ``train.max_grad_norm`` clips, read from the trainer's own first steps.

Wraps the accelerator's ``clip_grad_norm_`` to record the norm before clipping, trains ``train.max_steps``
steps of a config (then its one dev evaluation), and prints the median norm and the share of clipped
steps per window of steps. It says whether the clip is a rare guard or a per-step rescaling.

    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_grad_norms.py --steps 150 --window 50
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from common import REPO, SHARED_DATA, environment, write_json

from mmemo import load_config

RESULTS = Path(__file__).resolve().parent / "results"  # this experiment's own results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "meld"))
    parser.add_argument("--config", default=str(REPO / "configs" / "meld" / "text_best.yaml"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "meld_text_grad_norms"))
    parser.add_argument("--out", default=str(RESULTS / "meld_text_grad_norms.json"))
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from mmemo.training.trainer import Trainer

    config = load_config(args.config, [f"data.root={args.data}", "train.progress=false", f"train.seed={args.seed}",
                                       f"train.max_steps={args.steps}", *args.overrides])
    if not config.train.max_grad_norm:
        raise SystemExit("train.max_grad_norm is off in this config: nothing is clipped")
    trainer = Trainer(config, run_dir=Path(args.runs) / f"seed{args.seed}")
    norms: list[float] = []
    clip = trainer.accelerator.clip_grad_norm_

    def recording_clip(parameters, max_norm, *a, **kw):
        total = clip(parameters, max_norm, *a, **kw)
        norms.append(float(total))
        return total

    trainer.accelerator.clip_grad_norm_ = recording_clip
    trainer.fit()

    limit = config.train.max_grad_norm
    windows = []
    for start in range(0, len(norms), args.window):
        chunk = norms[start:start + args.window]
        windows.append({"steps": [start + 1, start + len(chunk)], "median_norm": round(statistics.median(chunk), 3),
                        "clipped_share": round(sum(n > limit for n in chunk) / len(chunk), 3)})
        print(f"steps {start + 1:>4}-{start + len(chunk):<4} median gradient norm {windows[-1]['median_norm']:.2f}  "
              f"clipped at {limit}: {windows[-1]['clipped_share']:.0%}")
    path = write_json(args.out, {"environment": environment(), "max_grad_norm": limit, "overrides": args.overrides,
                                 "windows": windows, "norms": [round(n, 4) for n in norms]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
