"""MELD text: which moving average of the weights (``train.ema_decay``) to keep, measured on one training
run per seed. The raw weights and an exponential moving average for each decay are evaluated on dev
after every epoch of the same run; since the average never feeds back into training, each column is
what a run with that ``ema_decay`` reports (its best epoch on dev), at the cost of one training per seed.

    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_ema.py --seeds 0 1 2 --jobs 3 --threads 1 train.epochs=4
    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_ema.py --collect runs/bench/meld_text_ema/seed*   # tables from finished runs

Each run folder gets ``ema_screen.jsonl`` (one line per epoch: dev weighted F1 of the raw weights and of
each average); the summary goes to ``results/meld_text_ema.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import REPO, SHARED_DATA, dev_history, fmt, mean_std, write_json

from mmemo import load_config

RESULTS = Path(__file__).resolve().parent / "results"  # this experiment's own results

DECAYS = [0.995, 0.99, 0.998]  # the first is the one the trainer keeps (saved in best/)


def run_seed(config_path: str, overrides: list[str], decays: list[float], seed: int, run_dir: str, threads: int) -> None:
    """Train once; after each epoch, evaluate the raw weights and every average on dev."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from mmemo.training.trainer import Trainer

    torch.set_num_threads(threads)
    # The trainer keeps the first average (it is the one saved in best/); the others are kept alongside.
    config = load_config(config_path, [*overrides, f"train.seed={seed}", f"train.ema_decay={decays[0]}"])
    trainer = Trainer(config, run_dir=run_dir)
    extras = {d: AveragedModel(trainer.unwrapped, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in decays[1:]}
    update = trainer.ema.update_parameters

    def update_all(model: torch.nn.Module) -> None:
        update(model)
        for average in extras.values():
            average.update_parameters(model)

    trainer.ema.update_parameters = update_all
    evaluate = trainer.evaluate_split

    def evaluate_all(split: str) -> dict:
        kept = trainer.ema
        record = {"epoch": trainer.state["epoch"], "time": time.time()}
        trainer.ema = None
        record["raw"] = evaluate(split)["weighted_f1"]
        for d, average in extras.items():
            trainer.ema = average
            record[str(d)] = evaluate(split)["weighted_f1"]
        trainer.ema = kept
        out = evaluate(split)
        record[str(decays[0])] = out["weighted_f1"]
        with open(Path(run_dir) / "ema_screen.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return out

    trainer.evaluate_split = evaluate_all
    trainer.fit()


def collect(run_dirs: list[Path]) -> dict:
    runs = []
    for run_dir in run_dirs:
        path = run_dir / "ema_screen.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: no ema_screen.jsonl (has this run finished its first epoch?)")
        epochs = [json.loads(line) for line in path.read_text().splitlines()]
        train_config = load_config(run_dir / "config.yaml").train
        columns = [k for k in epochs[0] if k not in ("epoch", "time")]
        # The average the trainer kept: every metric of its selected epoch, from the run's own log.
        _, selected = dev_history(run_dir)
        kept = {"ema_decay": train_config.ema_decay, "epoch": selected["epoch"],
                **{k: selected[k] for k in ("weighted_f1", "accuracy", "macro_f1", "per_class_f1")}}
        runs.append({"seed": train_config.seed, "run_dir": str(run_dir), "epochs": len(epochs),
                     "dev_weighted_f1_by_epoch": {c: [e[c] for e in epochs] for c in columns},
                     "best": {c: max(e[c] for e in epochs) for c in columns}, "kept_average": kept})
    columns = sorted(runs[0]["best"], key=lambda c: -1.0 if c == "raw" else float(c))
    summary = {c: mean_std([r["best"][c] for r in runs]) for c in columns}
    summary["kept_average"] = {k: mean_std([r["kept_average"][k] for r in runs]) for k in ("weighted_f1", "accuracy", "macro_f1")}
    summary["kept_average"]["per_class_f1"] = {
        c: mean_std([r["kept_average"]["per_class_f1"][c] for r in runs]) for c in runs[0]["kept_average"]["per_class_f1"]}
    return {"runs": runs, "summary": summary, "columns": columns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "meld"))
    parser.add_argument("--config", default=str(REPO / "configs" / "meld" / "text_best.yaml"))
    parser.add_argument("--decays", type=float, nargs="+", default=DECAYS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "meld_text_ema"))
    parser.add_argument("--collect", nargs="+", type=Path, help="only read these finished run folders")
    parser.add_argument("--out", default=str(RESULTS / "meld_text_ema.json"))
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides = [f"data.root={args.data}", "train.progress=false", *args.overrides]

    run_dirs = args.collect
    if run_dirs is None:
        run_dirs = [Path(args.runs) / f"seed{seed}" for seed in args.seeds]
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
            for f in [pool.submit(run_seed, args.config, overrides, args.decays, seed, str(d), args.threads)
                      for seed, d in zip(args.seeds, run_dirs)]:
                f.result()
    result = collect(run_dirs)

    columns = result["columns"]
    print("MELD dev weighted F1, best epoch of each column (raw weights, then each ema_decay)")
    print(f"{'seed':>4} " + " ".join(f"{c:>8}" for c in columns))
    for r in result["runs"]:
        print(f"{r['seed']:>4} " + " ".join(f"{r['best'][c]:8.2f}" for c in columns))
        for c in columns:
            print(f"      {c:>6} by epoch: {r['dev_weighted_f1_by_epoch'][c]}")
    print("mean ± std: " + "  ".join(f"{c} {fmt(result['summary'][c], 2)}" for c in columns))
    kept = result["summary"]["kept_average"]
    print(f"the average the trainer kept (ema_decay {result['runs'][0]['kept_average']['ema_decay']}): "
          f"W-F1 {fmt(kept['weighted_f1'], 2)}  acc {fmt(kept['accuracy'])}  macro-F1 {fmt(kept['macro_f1'])}")
    print("per-class F1: " + "  ".join(f"{c} {fmt(v)}" for c, v in kept["per_class_f1"].items()))
    config = load_config(run_dirs[0] / "config.yaml").to_dict() if (run_dirs[0] / "config.yaml").exists() else None
    path = write_json(args.out, {"benchmark": "meld_text_ema", "config": config, "overrides": args.overrides, **result})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
