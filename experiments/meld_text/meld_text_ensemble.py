"""MELD text: do the trained models disagree enough for their average to be better? A diagnostic on
finished runs' dev predictions (``predictions_dev.csv``, one probability column per class): each model's
dev weighted F1, the average of every pair of models' probabilities, every configuration's seeds averaged,
and all models averaged. Nothing is trained.

    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_ensemble.py runs/bench/meld_text_*/seed*

If averaging many models is no better than one, their errors are shared: the limit is in what the text
and the model see, and a knob that moves one run by a few tenths cannot be told from seed noise.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
from common import mean_std, write_json
from sklearn.metrics import f1_score

RESULTS = Path(__file__).resolve().parent / "results"  # this experiment's own results


def read_probabilities(run_dir: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """(ids, labels, class names, probabilities) of a run's dev predictions, rows sorted by id."""
    path = run_dir / "predictions_dev.csv"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no predictions_dev.csv (has this run finished?)")
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["id"])
    names = [c[2:] for c in rows[0] if c.startswith("p_")]
    probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    return [r["id"] for r in rows], [r["label"] for r in rows], names, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with predictions_dev.csv")
    parser.add_argument("--out", default=str(RESULTS / "meld_text_ensemble.json"))
    args = parser.parse_args()

    ids, labels, names, _ = read_probabilities(args.runs[0])
    probs = {}
    for run in args.runs:
        run_ids, _, run_names, p = read_probabilities(run)
        if run_ids != ids or run_names != names:
            raise ValueError(f"{run}: its dev rows or classes differ from {args.runs[0]}'s")
        probs[str(run)] = p

    def weighted_f1(p: np.ndarray) -> float:
        return round(100 * f1_score(labels, [names[i] for i in p.argmax(1)], average="weighted"), 2)

    single = {run: weighted_f1(p) for run, p in probs.items()}
    gains = [weighted_f1(probs[a] + probs[b]) - (single[a] + single[b]) / 2 for a, b in itertools.combinations(probs, 2)]
    by_config: dict[str, list[str]] = {}
    for run in probs:
        by_config.setdefault(str(Path(run).parent), []).append(run)
    configs = {c: {"seeds": weighted_f1(sum(probs[r] for r in runs)),
                   "mean_single": round(float(np.mean([single[r] for r in runs])), 2)} for c, runs in by_config.items()}
    everything = weighted_f1(sum(probs.values()))
    predicted = np.stack([p.argmax(1) for p in probs.values()])  # [models, utterances]
    agreement = np.mean([np.mean(predicted[a] == predicted[b]) for a, b in itertools.combinations(range(len(probs)), 2)])
    right = predicted == np.array([names.index(label) for label in labels])
    shares = {"pair_agreement": round(100 * float(agreement), 1), "all_right": round(100 * float(right.all(0).mean()), 1),
              "all_wrong": round(100 * float((~right).all(0).mean()), 1)}

    for run, f1 in single.items():
        print(f"{f1:6.2f}  {run}")
    print(f"\n{len(probs)} models: single {mean_std(list(single.values()))['mean']:.2f} ± {mean_std(list(single.values()))['std']:.2f}; "
          f"average of a pair minus its two models' mean: {np.mean(gains):+.2f} (min {min(gains):+.2f}, max {max(gains):+.2f}, "
          f"{len(gains)} pairs); all {len(probs)} averaged: {everything:.2f}")
    print(f"two models predict the same class for {shares['pair_agreement']}% of dev utterances on average; "
          f"all are right on {shares['all_right']}%, all wrong on {shares['all_wrong']}%")
    for c, r in configs.items():
        print(f"  {c}: seeds averaged {r['seeds']:.2f} (their mean {r['mean_single']:.2f})")
    path = write_json(args.out, {"benchmark": "meld_text_ensemble", "dev_weighted_f1": single,
                                 "single": mean_std(list(single.values())),
                                 "pair_gain": {"mean": round(float(np.mean(gains)), 2), "min": round(min(gains), 2),
                                               "max": round(max(gains), 2), "pairs": len(gains)},
                                 "by_config": configs, "all_averaged": everything, **shares})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
