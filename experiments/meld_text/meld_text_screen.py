"""MELD text: a screen of settings around ``configs/meld/text_best.yaml`` with many seeds each, made for a
GPU machine, where one run takes minutes instead of the 25 on the 2-core CPU. Each run is
``meld_text_ema.py``'s ``run_seed`` (dev W-F1 of the raw weights and of each moving average after every
epoch); runs go seed-major (every setting of one seed before the next seed), ``JOBS`` at a time, and
none starts after ``DEADLINE`` seconds, so that a run cut short by the machine's time limit still
leaves every setting with the same seeds. The per-epoch lines of all runs are gathered into ``OUT``
every 10 s.

    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_screen.py CHECKPOINT DATA RUNS OUT JOBS SEEDS DEADLINE [SETTINGS]
    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_screen.py /tmp/minilm ../shared/data/meld /tmp/screen screen.jsonl 10 10,11 230 base,random
    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_screen.py --summary scripts/bench/results/meld_text_gpu_screen*.jsonl

Extra overrides for every run go in the environment variable ``SCREEN_EXTRA`` (space-separated).
"""

import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from common import REPO, mean_std
from meld_text_ema import DECAYS, run_seed  # DECAYS[0] is the average the trainer keeps

CONFIG = str(REPO / "configs" / "meld" / "text_best.yaml")
SETTINGS = {
    "base": [],
    "ls02": ["train.label_smoothing=0.2"],
    "warm02": ["train.warmup_ratio=0.2"],
    "lswarm": ["train.label_smoothing=0.2", "train.warmup_ratio=0.2"],
    "ctx3": ["model.encoders.text.context_turns=3"],
    "drop03": ["model.fusion.dropout=0.3", "model.head_dropout=0.3"],
    "random": ["train.sampler=random"],
    "wd01": ["train.weight_decay=0.1"],
    # EmoryNLP's train split as a second task with its own head; $SHARED is the folder that holds DATA
    "emory": ["data.auxiliary={emorynlp: {source: emorynlp, root: $SHARED/emorynlp, label_set: emorynlp7}}"],
}


def task(name: str, seed: int, ckpt: str, data: str, root: str, threads: int) -> tuple[str, int]:
    overrides = [f"data.root={data}", "train.progress=false", "train.precision=no",
                 f"model.encoders.text.checkpoint={ckpt}", *(o.replace("$SHARED", str(Path(data).resolve().parent))
                                                             for o in SETTINGS[name]),
                 *os.environ.get("SCREEN_EXTRA", "").split()]
    run_seed(CONFIG, overrides, DECAYS, seed, f"{root}/{name}/seed{seed}", threads)
    return name, seed


def aggregate(root: str, out: str) -> None:
    rows = []
    for p in sorted(Path(root).glob("*/seed*/ema_screen.jsonl")):
        for line in p.read_text().splitlines():
            rows.append({"setting": p.parent.parent.name, "seed": int(p.parent.name[4:]), **json.loads(line)})
    Path(out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def summary(paths: list[str]) -> dict:
    """Per setting and column: the best epoch of each seed, then mean ± std over seeds; and each setting's
    difference from ``base`` on the seeds both ran (paired, since a seed shares data order and initial head)."""
    runs = defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs[(r["setting"], r["seed"])].append(r)
    out: dict = {}
    for (name, seed), epochs in sorted(runs.items()):
        columns = [c for c in epochs[0] if c not in ("setting", "seed", "epoch", "time")]
        entry = out.setdefault(name, {"seeds": [], "best": defaultdict(list), "epochs": []})
        entry["seeds"].append(seed)
        entry["epochs"].append(len(epochs))
        for c in columns:
            entry["best"][c].append(max(e[c] for e in epochs))
    kept = str(DECAYS[0])
    print(f"{'setting':<8} {'seeds':>5}  {kept:>13}  {'raw':>13}   kept average ({kept}) per seed")
    for name, e in out.items():
        e["best"] = dict(e["best"])
        e["mean_std"] = {c: mean_std(v) for c, v in e["best"].items()}
        cells = "  ".join(f"{e['mean_std'][c]['mean']:6.2f} ± {e['mean_std'][c]['std']:4.2f}" for c in (kept, "raw"))
        print(f"{name:<8} {len(e['seeds']):>5}  {cells}   {', '.join(f'{v:.2f}' for v in e['best'][kept])}")
    if "base" in out:
        base = dict(zip(out["base"]["seeds"], out["base"]["best"][kept]))
        print(f"\npaired with base ({kept}): mean difference ± standard error, seeds where the setting is higher")
        for name, e in out.items():
            diffs = [v - base[s] for s, v in zip(e["seeds"], e["best"][kept]) if s in base]
            if name == "base" or len(diffs) < 2:
                continue
            se = statistics.stdev(diffs) / len(diffs) ** 0.5
            e["paired_with_base"] = {"seeds": len(diffs), "mean": round(statistics.fmean(diffs), 2),
                                     "se": round(se, 2), "higher": sum(d > 0 for d in diffs)}
            p = e["paired_with_base"]
            print(f"{name:<8} {p['seeds']:>5}  {p['mean']:+6.2f} ± {p['se']:4.2f}   higher on {p['higher']} of {p['seeds']}")
    return out


def main() -> None:
    if sys.argv[1] == "--summary":
        summary(sys.argv[2:])
        return
    ckpt, data, root, out = sys.argv[1:5]
    jobs, seeds, deadline = int(sys.argv[5]), [int(s) for s in sys.argv[6].split(",")], float(sys.argv[7])
    names = sys.argv[8].split(",") if len(sys.argv) > 8 else list(SETTINGS)
    os.environ["HF_HUB_OFFLINE"] = "1"
    start = time.time()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(10):
            try:
                aggregate(root, out)
            except Exception as e:  # a file being written: the next round reads it whole
                print("aggregate:", e, flush=True)

    threading.Thread(target=loop, daemon=True).start()
    queue = [(n, s) for s in seeds for n in names]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        running: set = set()
        while queue or running:
            while queue and len(running) < jobs and time.time() - start < deadline:
                n, s = queue.pop(0)
                running.add(pool.submit(task, n, s, ckpt, data, root, 1))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    print("done", f.result(), f"{time.time() - start:.0f}s", flush=True)
                except Exception as e:
                    print("FAILED", repr(e), flush=True)
    stop.set()
    aggregate(root, out)
    print("total", f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
