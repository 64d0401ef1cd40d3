"""Benchmark: the same 7-class training on the demo data read from files, from a ``videofolder`` dataset and from
Parquet bytes; the embedding cache on the dataset source; Ray scoring against ``predict_batch``. One run.

    python scripts/bench/data_sources.py --threads 1                       # demo data (written to demo_data/)
    python scripts/bench/data_sources.py --threads 1 --epochs 2 --sweep-epochs 1 --skip-ray

1. **Per-epoch time** of ``configs/demo.yaml`` (text + audio + vision, end to end) with the data read by the MELD
   reader from files (the baseline), by ``source: hf`` from a ``videofolder`` (a folder of clips with a
   ``metadata.csv``: paths) and from Parquet files holding the clips' bytes. Goal: each within 10% of files.
2. **Embedding-cache ratio** on the Parquet source: the 7-combination ablation with frozen encoders, cache off and
   on (``scripts/bench/ablation_cache.py``'s measure), beside the same on files. Goal: cached / uncached <= 0.25.
3. **Ray scoring**: rows per second of ``mmemo.integrations.ray.score`` with 1 and 2 actors on the test split's
   Parquet bytes, against ``predict_batch`` on the same rows in this process (actor start-up included).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import torch
from ablation_cache import sweep
from common import RESULTS, write_json

from mmemo.config import load_config
from mmemo.data.demo import EMOTIONS
from mmemo.data.readers.meld import read_meld
from mmemo.training.trainer import train

HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
COLUMNS = {"text": "text", "video": "clip", "label": "emotion", "speaker": "speaker"}
KEEP = ("label_set", "num_frames", "sample_rate", "max_audio_seconds", "num_workers")


def build_sources(data: Path, out: Path) -> dict[str, dict]:
    """The demo tree as a videofolder (hard links to its clips, a metadata.csv per split) and as Parquet bytes;
    returns each source's ``data`` section (without the preprocessing keys)."""
    import datasets

    folder, parquet = out / "videofolder", out / "parquet"
    splits = read_meld(data)
    features = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string"),
                                  "clip": datasets.Video(), "emotion": datasets.ClassLabel(names=list(EMOTIONS)),
                                  "speaker": datasets.Value("string")})
    files = {}
    for split, name in HF_SPLITS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        rows = []
        for ex in splits[split]:
            clip = Path(ex.video)
            if clip.exists():  # a folder dataset lists files: the demo's one missing clip has no row there
                target = folder / name / clip.name
                if not target.exists():
                    os.link(clip, target)
            rows.append({"id": ex.id, "text": ex.text, "clip": clip if clip.exists() else None,
                         "emotion": ex.label, "speaker": ex.speaker})
        with open(folder / name / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "id", "text", "emotion", "speaker"])
            w.writerows([r["clip"].name, r["id"], r["text"], r["emotion"], r["speaker"]] for r in rows if r["clip"])
        ds = datasets.Dataset.from_dict(
            {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
             "clip": [{"path": r["clip"].name, "bytes": r["clip"].read_bytes()} if r["clip"] else None for r in rows],
             "emotion": [EMOTIONS.index(r["emotion"]) for r in rows], "speaker": [r["speaker"] for r in rows]},
            features=features)
        files[name] = str(parquet / f"{name}.parquet")
        ds.to_parquet(files[name])
    hf = {"source": "hf", "columns": COLUMNS, "label_set": "meld7"}
    return {"files": {"source": "meld", "root": str(data)},
            "videofolder": {**hf, "path": "videofolder", "data_dir": str(folder), "columns": {"label": "emotion"}},
            "parquet": {**hf, "path": "parquet", "data_files": files}}


def source_config(config: str, data: dict, overrides: dict) -> dict:
    base = load_config(config)
    keep = {k: getattr(base.data, k) for k in KEEP}
    return {**overrides, "data": {**keep, **data, **overrides.get("data", {})}}


def per_epoch(config: str, data: dict, epochs: int, run_dir: Path) -> dict:
    cfg = load_config(config, source_config(config, data, {"train": {"epochs": epochs, "progress": False}}))
    start = time.perf_counter()
    result = train(cfg, run_dir=run_dir)
    total = time.perf_counter() - start
    times = [h["time_s"] for h in result.history]
    epoch_s = [b - a for a, b in zip([0.0, *times], times)]
    return {"epoch_s": [round(t, 1) for t in epoch_s], "mean_epoch_s": round(sum(epoch_s) / len(epoch_s), 1),
            "total_s": round(total, 1), "dev_weighted_f1": result.dev["weighted_f1"], "run_dir": str(run_dir),
            "media_issues": result.media_issues}


def cache_ratio(config: str, data: dict, epochs: int, out: Path, max_examples: int | None) -> dict:
    """ablation_cache.py's measure on ``data``: the sweep uncached, then cached from an empty cache."""
    yaml_path = out / "config.yaml"
    frozen = {"model": {"encoders": {m: {"freeze": True} for m in ("text", "audio", "vision")}}}
    cfg = load_config(config, source_config(config, {**data, "max_examples": max_examples},
                                            {"train": {"epochs": epochs, "progress": False}, **frozen}))
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(yaml_path)
    results = {}
    for mode, cached in (("uncached", False), ("cached", True)):
        seconds, rows, dev = sweep(str(yaml_path), [f"data.embedding_cache={str(cached).lower()}",
                                                    f"data.cache_dir={out / mode / 'cache'}"], out / mode)
        results[mode] = {"time_s": round(seconds, 1), "encoded": rows, "mean_dev_weighted_f1": round(dev, 2)}
    results["ratio"] = round(results["cached"]["time_s"] / results["uncached"]["time_s"], 3)
    return results


def ray_scoring(model_dir: Path, parquet: str, batch_size: int) -> dict:
    import datasets
    import ray

    from mmemo.inference import EmotionRecognizer
    from mmemo.integrations.ray import score

    ds = datasets.Dataset.from_parquet(parquet)
    rec = EmotionRecognizer.from_pretrained(model_dir, device="cpu")
    columns = {"text": "text", "video": "clip"}
    start = time.perf_counter()
    rec.predict_batch(ds, columns=columns, batch_size=batch_size, progress=False)
    out = {"rows": len(ds), "predict_batch_rows_per_s": round(len(ds) / (time.perf_counter() - start), 2)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        for actors in (1, 2):
            start = time.perf_counter()
            rows = score(parquet, model_dir, columns=columns, batch_size=batch_size, num_actors=actors,
                         num_cpus=0.5, num_blocks=2 * actors).take_all()
            out[f"ray_{actors}_actor_rows_per_s"] = round(len(rows) / (time.perf_counter() - start), 2)
    finally:
        ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", default="demo_data", help="the demo data (written there if missing)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each per-epoch training")
    parser.add_argument("--rounds", type=int, default=1, help="train from every source this many times, interleaved")
    parser.add_argument("--sweep-epochs", type=int, default=2, help="epochs per run of the cache sweeps")
    parser.add_argument("--sweep-max-examples", type=int, help="data.max_examples of the cache sweeps")
    parser.add_argument("--skip-epochs", action="store_true", help="no per-epoch trainings (then no Ray part)")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULTS / "data_sources.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "train_sent_emo.csv").exists():
        from mmemo.data.demo import generate_demo_data

        print(f"writing demo data to {data}/ ...", flush=True)
        generate_demo_data(data)
    payload: dict = {"epochs": args.epochs, "rounds": args.rounds, "sweep_epochs": args.sweep_epochs,
                     "sweep_max_examples": args.sweep_max_examples}
    with tempfile.TemporaryDirectory(prefix="mmemo-bench-sources-") as tmp:
        tmp = Path(tmp)
        sources = build_sources(data, tmp / "sources")
        payload["per_epoch"] = {}
        for r in range(0 if args.skip_epochs else args.rounds):  # interleaved, so that a busier minute of the machine hits every source alike
            for name, section in sources.items():
                print(f"--- training from {name} (round {r + 1}) ---", flush=True)
                run = per_epoch(args.config, section, args.epochs, tmp / "runs" / f"{name}-{r}")
                if name not in payload["per_epoch"]:
                    payload["per_epoch"][name] = {**run, "rounds": []}
                payload["per_epoch"][name]["rounds"].append(run["epoch_s"])
        for run in payload["per_epoch"].values():
            every = [t for epochs in run["rounds"] for t in epochs]
            run["mean_epoch_s"] = round(sum(every) / len(every), 1)
            run["epoch_s"] = every
        base = payload["per_epoch"]["files"]["mean_epoch_s"] if payload["per_epoch"] else 0
        for name in ("videofolder", "parquet") if base else ():
            payload["per_epoch"][name]["vs_files"] = round(payload["per_epoch"][name]["mean_epoch_s"] / base, 3)
        if not args.skip_sweep:
            payload["cache"] = {}
            for name in ("files", "parquet"):
                print(f"--- cache sweeps on {name} ---", flush=True)
                payload["cache"][name] = cache_ratio(args.config, sources[name], args.sweep_epochs, tmp / "sweeps" / name,
                                                     args.sweep_max_examples)
        if not args.skip_ray and not args.skip_epochs:
            print("--- Ray scoring ---", flush=True)
            payload["ray"] = ray_scoring(tmp / "runs" / "files-0", sources["parquet"]["data_files"]["test"], 16)
    for run in payload["per_epoch"].values():
        run.pop("run_dir")
    write_json(args.out, payload)

    print(f"\nper-epoch time, {args.config}, {args.epochs} epoch(s), threads {torch.get_num_threads()}")
    print(f"{'source':<12} {'epoch (s)':>10} {'vs files':>9} {'dev wF1':>8}")
    for name, r in payload["per_epoch"].items():
        print(f"{name:<12} {r['mean_epoch_s']:10.1f} {r.get('vs_files', 1.0):9.3f} {r['dev_weighted_f1']:8.2f}")
    print("goal: each dataset source within 10% of files (vs files <= 1.10)")
    for name, c in payload.get("cache", {}).items():
        print(f"cache sweep on {name}: uncached {c['uncached']['time_s']} s, cached {c['cached']['time_s']} s, "
              f"ratio {c['ratio']:.3f} (goal: <= 0.25)")
    if "ray" in payload:
        r = payload["ray"]
        print(f"scoring {r['rows']} rows: predict_batch {r['predict_batch_rows_per_s']} rows/s, Ray 1 actor "
              f"{r['ray_1_actor_rows_per_s']} rows/s, 2 actors {r['ray_2_actor_rows_per_s']} rows/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
