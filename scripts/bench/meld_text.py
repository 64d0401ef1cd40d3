"""MELD text benchmark: fine-tune all-MiniLM-L6-v2 on MELD train, select each run's epoch on dev, and
report dev weighted F1, accuracy, macro F1 and per-class F1 as mean ± std over seeds, with wall time
and peak memory, beside what plain tools reach (shared/ANCHORS.md).

    python scripts/bench/meld_text.py                                 # configs/meld/text_best.yaml, seeds 0 1 2
    python scripts/bench/meld_text.py --seeds 0 train.epochs=1        # a cheap tuning run
    python scripts/bench/meld_text.py --collect runs/bench/a/seed0 runs/bench/b/seed3   # one table from finished runs
    python scripts/bench/meld_text.py --collect results/a.json results/b.json          # ... or from their results

Wall time depends on what else the machine runs; CPU time (all threads of the run) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import REPO, RESULTS, SHARED_DATA, dev_history, fmt, mean_std, peak_rss_mb, write_json

from mmemo import load_config, train

# shared/ANCHORS.md: dev weighted F1 of plain tools on the same split.
ANCHORS = {
    "majority class (neutral)": 25.2,
    "TF-IDF 1-2 grams + logistic regression": 43.2,
    "frozen all-MiniLM-L6-v2 + logistic regression": 52.0,
    "all-MiniLM-L6-v2 fine-tuned, utterance only, 3e-5, 3 epochs": 56.8,
}


def run_seed(config_path: str, overrides: list[str], seed: int, run_dir: str, threads: int) -> dict:
    """One seed in a fresh process, so that its peak memory and CPU time are its own."""
    torch.set_num_threads(threads)
    config = load_config(config_path, [*overrides, f"train.seed={seed}"])
    start, cpu_start = time.time(), time.process_time()
    result = train(config, run_dir=run_dir)
    dev = result.dev
    return {
        "seed": seed, "best_epoch": result.best_epoch, "run_dir": str(result.run_dir),
        "weighted_f1": dev["weighted_f1"], "accuracy": dev["accuracy"], "macro_f1": dev["macro_f1"],
        "per_class_f1": {k: v["f1"] for k, v in dev["per_class"].items()}, "n": dev["n"],
        "dev_weighted_f1_by_epoch": [h["weighted_f1"] for h in result.history],
        "train_minutes": round((time.time() - start) / 60, 1),
        "cpu_minutes": round((time.process_time() - cpu_start) / 60, 1), "peak_rss_mb": peak_rss_mb(),
    }


def read_run(run_dir: Path) -> dict:
    """A finished run folder as ``run_seed`` reports it, from its own log: so that seeds trained at different
    times (or by ``meld_text_ema.py``) make one table. Its CPU time and peak memory were not logged."""
    history, selected = dev_history(run_dir)
    return {
        "seed": load_config(run_dir / "config.yaml").train.seed, "best_epoch": selected["epoch"], "run_dir": str(run_dir),
        **{k: selected[k] for k in ("weighted_f1", "accuracy", "macro_f1", "per_class_f1", "n")},
        "dev_weighted_f1_by_epoch": [h["weighted_f1"] for h in history],
        "train_minutes": round(history[-1]["time_s"] / 60, 1), "cpu_minutes": None, "peak_rss_mb": None,
    }


def read_collected(path: Path) -> tuple[list[dict], dict]:
    """The runs and config of a finished run folder, or of a results JSON this script wrote: run folders stay on
    the machine that trained them, while the JSON is committed, so seeds trained in different sessions can still
    make one table."""
    if path.is_dir():
        return [read_run(path)], load_config(path / "config.yaml").to_dict()
    try:
        payload = json.loads(path.read_text())
        return payload["runs"], payload["config"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"--collect {path}: neither a run folder nor a results JSON of meld_text.py ({err!r})") from err


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, leaving out those that differ between runs of one setting anyway."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        key = f"{prefix}{k}"
        if key in ("name", "train.seed", "output_dir", "data.root") or (not a.get(k) and not b.get(k)):
            continue  # a key added since with its empty default counts as the same
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += config_differences(a[k], b[k], f"{key}.")
        elif a.get(k) != b.get(k):
            out.append(key)
    return out


def collect(paths: list[Path]) -> tuple[list[dict], dict]:
    """One table's runs from several sources. A seed that appears twice is an error; sources whose settings
    differ are named, so that a table never mixes settings without saying so."""
    runs, config, seen = [], None, {}
    for path in paths:
        found, found_config = read_collected(path)
        if config is None:
            config = found_config
        elif differences := config_differences(config, found_config):
            print(f"warning: {path} differs from {paths[0]} in {', '.join(differences)}")
        for r in found:
            if r["seed"] in seen:
                raise SystemExit(f"--collect: seed {r['seed']} is in both {seen[r['seed']]} and {path}")
            seen[r["seed"]] = path
        runs += found
    return runs, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "meld"), help="folder with train_sent_emo.csv, dev_sent_emo.csv")
    parser.add_argument("--config", default=str(REPO / "configs" / "meld" / "text_best.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at the same time, each in its own process")
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "meld_text"), help="run folders go here")
    parser.add_argument("--out", default=str(RESULTS / "meld_text.json"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads per seed")
    parser.add_argument("--collect", nargs="+", type=Path,
                        help="train nothing; read these finished run folders or results JSONs of this script")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    overrides = [f"data.root={args.data}", "train.progress=false", *args.overrides]

    if args.collect:
        runs, config = collect(args.collect)
        args.config = str(args.collect[0])
    else:
        config = load_config(args.config, overrides).to_dict()  # a bad override fails here, before any training
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = [pool.submit(run_seed, args.config, overrides, seed, str(Path(args.runs) / f"seed{seed}"), args.threads)
                       for seed in args.seeds]
            runs = [f.result() for f in futures]
    for r in runs:
        print(f"seed {r['seed']}: dev weighted F1 by epoch {r['dev_weighted_f1_by_epoch']}")

    labels = list(runs[0]["per_class_f1"])
    summary = {k: mean_std([r[k] for r in runs]) for k in ("weighted_f1", "accuracy", "macro_f1", "train_minutes")}
    cpu, peak = [r["cpu_minutes"] for r in runs if r["cpu_minutes"] is not None], [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"]]
    summary["cpu_minutes"] = mean_std(cpu) if cpu else None
    summary["per_class_f1"] = {c: mean_std([r["per_class_f1"][c] for r in runs]) for c in labels}
    summary["peak_rss_mb"] = max(peak) if peak else None

    print(f"\nMELD dev (n={runs[0]['n']}), all-MiniLM-L6-v2, {args.config} {' '.join(args.overrides)}")
    print(f"{'seed':>4} {'epoch':>5} {'W-F1':>6} {'acc':>6} {'M-F1':>6} {'wall min':>8} {'CPU min':>8} {'peak MB':>8}")
    for r in runs:
        cpu, peak = (f"{r[k]:8.0f}" if r[k] is not None else f"{'-':>8}" for k in ("cpu_minutes", "peak_rss_mb"))
        print(f"{r['seed']:>4} {r['best_epoch']:>5} {r['weighted_f1']:6.2f} {r['accuracy']:6.2f} {r['macro_f1']:6.2f} "
              f"{r['train_minutes']:8.1f} {cpu} {peak}")
    cpu = f", {fmt(summary['cpu_minutes'])} CPU min" if summary["cpu_minutes"] else ""
    print(f"mean ± std: W-F1 {fmt(summary['weighted_f1'], 2)}  acc {fmt(summary['accuracy'])}  "
          f"macro-F1 {fmt(summary['macro_f1'])}  ({fmt(summary['train_minutes'])} wall min{cpu} per run)")
    print("per-class F1: " + "  ".join(f"{c} {fmt(summary['per_class_f1'][c])}" for c in labels))
    print("\nanchors (dev W-F1, shared/ANCHORS.md):")
    for name, value in ANCHORS.items():
        print(f"  {value:5.1f}  {name}")
    # Collected runs were trained by other commands: this one's --jobs and --threads say nothing about them.
    jobs, threads = (None, None) if args.collect else (args.jobs, args.threads)
    path = write_json(args.out, {"benchmark": "meld_text", "data": config["data"]["root"], "jobs": jobs, "threads": threads,
                                 "config": config, "overrides": args.overrides, "collected": bool(args.collect),
                                 "runs": runs, "summary": summary, "anchors_dev_weighted_f1": ANCHORS})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
