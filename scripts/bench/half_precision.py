"""Half precision at inference: the same label as float32 on a model's dev set (goal: at least 99% of inputs).

Runs ``predict_batch`` over every dev input (its text and its clip: the clip's frames and audio track) once in
float32 (the baseline) and once per half-precision dtype, in the same run, and reports the share of inputs whose
label agrees with float32, the largest difference of a class probability, each run's time, and the dev
accuracy of each. Usage: ``python scripts/bench/half_precision.py [--model runs/demo-...] [--dtypes bfloat16]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import RESULTS, write_json
from serve_load import newest_demo_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="run folder (default: the newest runs/demo-*)")
    parser.add_argument("--dtypes", default="bfloat16", help="comma-separated: bfloat16, float16")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--out", type=Path, default=RESULTS / "half_precision.json")
    args = parser.parse_args()

    import torch

    from mmemo import EmotionRecognizer, load_config
    from mmemo.data.loading import load_splits

    torch.set_num_threads(args.threads)

    run = args.model or newest_demo_run()
    config = load_config(run / "config.yaml")
    splits, _ = load_splits(config)
    examples = splits[args.split]
    rows = [{"id": ex.id, "text": ex.text, "video": ex.video, "audio": ex.audio, "speaker": ex.speaker} for ex in examples]
    rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    truth = [ex.label for ex in examples]

    runs = {}
    for dtype in ["float32", *args.dtypes.split(",")]:
        recognizer = EmotionRecognizer.from_pretrained(run, device=args.device, dtype=dtype)
        recognizer.predict_batch(rows[: args.batch_size], batch_size=args.batch_size, progress=False)  # warm-up
        start = time.perf_counter()
        preds = recognizer.predict_batch(rows, batch_size=args.batch_size, progress=False)
        runs[dtype] = {"preds": preds, "seconds": time.perf_counter() - start}

    base = runs["float32"]["preds"]
    table = {}
    for dtype, r in runs.items():
        preds = r["preds"]
        same = sum(a.label == b.label for a, b in zip(base, preds))
        diff = max(abs(a.probs[k] - b.probs[k]) for a, b in zip(base, preds) if a.probs and b.probs for k in a.probs)
        table[dtype] = {"inputs": len(preds), "same_label": same, "agreement": round(same / len(preds), 4),
                        "max_prob_diff": round(diff, 4), "seconds": round(r["seconds"], 2),
                        "accuracy": round(100 * sum(p.label == t for p, t in zip(preds, truth)) / len(preds), 2)}
    print(f"model {run}, {args.split} split, {len(rows)} inputs, device {args.device}, {args.threads} torch thread(s)\n")
    print("| dtype | same label as float32 | largest probability difference | time | accuracy |")
    print("|---|---|---|---|---|")
    for dtype, t in table.items():
        print(f"| {dtype} | {t['same_label']}/{t['inputs']} ({100 * t['agreement']:.1f}%) | {t['max_prob_diff']:.4f} | "
              f"{t['seconds']:.1f} s | {t['accuracy']:.2f} |")
    print(f"\nresults: {write_json(args.out, {'model': str(run), 'split': args.split, 'dtypes': table})}")


if __name__ == "__main__":
    main()
