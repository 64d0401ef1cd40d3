"""MELD text benchmark: fine-tune all-MiniLM-L6-v2 on MELD train, select each run's epoch on dev, and
report dev weighted F1, accuracy, macro F1 and per-class F1 as mean ± std over seeds, with wall time
and peak memory, beside what plain tools reach (shared/ANCHORS.md).

    python scripts/bench/meld_text.py                                 # configs/meld/text_best.yaml, seeds 0 1 2
    python scripts/bench/meld_text.py --seeds 0 train.epochs=1        # a cheap tuning run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import REPO, RESULTS, SHARED_DATA, fmt, mean_std, peak_rss_mb, write_json

from mmemo import load_config, train

# shared/ANCHORS.md: dev weighted F1 of plain tools on the same split.
ANCHORS = {
    "majority class (neutral)": 25.2,
    "TF-IDF 1-2 grams + logistic regression": 43.2,
    "frozen all-MiniLM-L6-v2 + logistic regression": 52.0,
    "all-MiniLM-L6-v2 fine-tuned, utterance only, 3e-5, 3 epochs": 56.8,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "meld"), help="folder with train_sent_emo.csv, dev_sent_emo.csv")
    parser.add_argument("--config", default=str(REPO / "configs" / "meld" / "text_best.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "meld_text"), help="run folders go here")
    parser.add_argument("--out", default=str(RESULTS / "meld_text.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs = []
    for seed in args.seeds:
        config = load_config(args.config, [f"data.root={args.data}", f"train.seed={seed}", "train.progress=false",
                                           *args.overrides])
        start = time.time()
        result = train(config, run_dir=Path(args.runs) / f"seed{seed}")
        dev = result.dev
        runs.append({
            "seed": seed, "best_epoch": result.best_epoch, "run_dir": str(result.run_dir),
            "weighted_f1": dev["weighted_f1"], "accuracy": dev["accuracy"], "macro_f1": dev["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in dev["per_class"].items()},
            "dev_weighted_f1_by_epoch": [h["weighted_f1"] for h in result.history],
            "train_minutes": round((time.time() - start) / 60, 1), "peak_rss_mb": peak_rss_mb(),
        })
        print(f"seed {seed}: dev weighted F1 {dev['weighted_f1']:.2f} (epoch {result.best_epoch}), "
              f"{runs[-1]['train_minutes']} min", flush=True)

    labels = list(runs[0]["per_class_f1"])
    summary = {k: mean_std([r[k] for r in runs]) for k in ("weighted_f1", "accuracy", "macro_f1", "train_minutes")}
    summary["per_class_f1"] = {c: mean_std([r["per_class_f1"][c] for r in runs]) for c in labels}
    summary["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)

    print(f"\nMELD dev (n={dev['n']}), all-MiniLM-L6-v2, {args.config} {' '.join(args.overrides)}")
    print(f"{'seed':>4} {'epoch':>5} {'W-F1':>6} {'acc':>6} {'M-F1':>6} {'min':>6} {'peak MB':>8}")
    for r in runs:
        print(f"{r['seed']:>4} {r['best_epoch']:>5} {r['weighted_f1']:6.2f} {r['accuracy']:6.2f} {r['macro_f1']:6.2f} "
              f"{r['train_minutes']:6.1f} {r['peak_rss_mb']:8.0f}")
    print(f"mean ± std: W-F1 {fmt(summary['weighted_f1'])}  acc {fmt(summary['accuracy'])}  "
          f"macro-F1 {fmt(summary['macro_f1'])}  ({fmt(summary['train_minutes'])} min per run)")
    print("per-class F1: " + "  ".join(f"{c} {fmt(summary['per_class_f1'][c])}" for c in labels))
    print("\nanchors (dev W-F1, shared/ANCHORS.md):")
    for name, value in ANCHORS.items():
        print(f"  {value:5.1f}  {name}")
    path = write_json(args.out, {"benchmark": "meld_text", "data": args.data, "config": load_config(
        args.config, [f"data.root={args.data}", *args.overrides]).to_dict(), "overrides": args.overrides,
        "runs": runs, "summary": summary, "anchors_dev_weighted_f1": ANCHORS})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
