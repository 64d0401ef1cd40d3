"""Benchmark: the 7-combination ablation with frozen encoders, embedding cache off vs on, in one run.

    python scripts/bench/ablation_cache.py                      # the demo data (written to demo_data/ if missing)
    python scripts/bench/ablation_cache.py --epochs 3 --config configs/meld/text_audio_vision.yaml \
        --data /data/MELD.Raw data.max_examples=1000

Both sweeps train the same seven runs (text, audio, vision, and every combination) with every encoder frozen.
Uncached, each run decodes every clip and runs every encoder on it in every epoch; cached, the first run that
needs an encoder computes its embeddings once (this time is included: the cache starts empty) and every later
step reads them from disk. It prints both times, their ratio, how many examples went through each encoder,
and the mean dev score of both sweeps (equal up to float rounding).
"""

from __future__ import annotations

import argparse
import collections
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmemo.ablation import ablate
from mmemo.models.encoders.base import Encoder


def sweep(config: str, overrides: list[str], out: Path) -> tuple[float, dict[str, int], float]:
    rows: collections.Counter = collections.Counter()

    def count(module, args, output):
        if isinstance(module, Encoder):
            rows[module.modality] += output.pooled.shape[0]

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    start = time.perf_counter()
    try:
        folder = ablate(config, overrides, modalities="all", out_dir=out)
    finally:
        hook.remove()
    seconds = time.perf_counter() - start
    results = list(csv.DictReader(open(folder / "results.csv")))
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed, e.g. {failed[0]['modalities']}: {failed[0]['error']}")
    return seconds, dict(rows), statistics.fmean(float(r["dev_weighted_f1"]) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", default="demo_data", help="data.root (the demo data is written there if missing)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", help="keep the sweeps here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = Path(args.data)
    if args.config == "configs/demo.yaml" and not (data / "train_sent_emo.csv").exists():
        from mmemo.data.demo import generate_demo_data

        print(f"writing demo data to {data}/ ...")
        generate_demo_data(data)
    with tempfile.TemporaryDirectory(prefix="mmemo-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        common = [f"data.root={data}", f"train.epochs={args.epochs}", "train.progress=false",
                  *[f"model.encoders.{m}.freeze=true" for m in ("text", "audio", "vision")], *args.overrides]
        results = {}
        for mode, cached in (("uncached", False), ("cached", True)):
            print(f"--- {mode} sweep ---", flush=True)
            results[mode] = sweep(args.config, [*common, f"data.embedding_cache={str(cached).lower()}",
                                                f"data.cache_dir={out / mode / 'embedding-cache'}"], out / mode)

    print(f"\n7-combination ablation, frozen encoders, {args.epochs} epoch(s) per run, data: {data}")
    print(f"{'sweep':<10} {'time (s)':>9} {'per run (s)':>12}  {'examples encoded (text/audio/vision)':<38} {'mean dev wF1':>12}")
    for mode, (seconds, rows, dev) in results.items():
        encoded = "/".join(str(rows.get(m, 0)) for m in ("text", "audio", "vision"))
        print(f"{mode:<10} {seconds:9.1f} {seconds / 7:12.1f}  {encoded:<38} {dev:12.2f}")
    ratio = results["cached"][0] / results["uncached"][0]
    print(f"cached / uncached time: {ratio:.3f}  (goal: <= 0.25)")


if __name__ == "__main__":
    main()
