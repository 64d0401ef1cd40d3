"""MELD text: does a decision rule tuned for weighted F1 beat the argmax? A diagnostic on finished runs' dev
predictions (``predictions_dev.csv``); nothing is trained.

The argmax of calibrated probabilities maximises accuracy, not weighted F1, so a per-class offset added to
the log-probabilities before the argmax can trade a little of the large classes' F1 for more of the small
ones'. Offsets tuned on the same dev set they are scored on are optimistic, so each rule is scored three ways:

- ``in_sample``: tuned and scored on all of dev (an upper bound, not a result);
- ``cross_fitted``: dev's dialogues split into ``--folds`` parts; each part is predicted with offsets tuned
  on the others, and weighted F1 is computed once over all of dev; the mean over ``--repeats`` random
  splits is the honest estimate of what offsets tuned on dev give on dialogues they were not tuned on;
- the argmax itself, for the difference.

Two rules: ``prior``, one parameter τ (logit adjustment: subtract τ · log of each class's share of the
tuning labels; Menon et al., ICLR 2021), and ``per_class``, one offset per class (the largest class's fixed
at 0), by coordinate ascent over a grid.

    PYTHONPATH=scripts/bench python experiments/meld_text/meld_text_offsets.py runs/bench/meld_text_emorynlp_seeds1011/seed*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import mean_std, write_json
from meld_text_ensemble import read_probabilities

RESULTS = Path(__file__).resolve().parent / "results"  # this experiment's own results

PRIOR_GRID = np.round(np.arange(-1.0, 2.001, 0.05), 2)
OFFSET_GRID = np.round(np.arange(-2.0, 2.001, 0.1), 2)


def weighted_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """scikit-learn's weighted F1 over all classes (zero_division=0), in percent, without its overhead."""
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return 100 * float((f1 * support).sum() / support.sum())


def fit_prior(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Offsets −τ · log(class share), τ on a grid; ties go to the τ nearest 0."""
    k = logp.shape[1]
    log_share = np.log(np.maximum(np.bincount(y, minlength=k), 1) / len(y))
    scores = [(weighted_f1(y, (logp - t * log_share).argmax(1), k), -abs(t), t) for t in PRIOR_GRID]
    return -max(scores)[2] * log_share


def fit_per_class(logp: np.ndarray, y: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """One offset per class by coordinate ascent; the largest class stays at 0; ties go to the value nearest 0."""
    k = logp.shape[1]
    offsets = np.zeros(k)
    reference = int(np.bincount(y, minlength=k).argmax())
    for _ in range(sweeps):
        before = offsets.copy()
        for c in range(k):
            if c == reference:
                continue
            best = None
            for v in OFFSET_GRID:
                offsets[c] = v
                score = (weighted_f1(y, (logp + offsets).argmax(1), k), -abs(v), v)
                best = max(best, score) if best else score
            offsets[c] = best[2]
        if np.array_equal(before, offsets):
            break
    return offsets


RULES = {"prior": fit_prior, "per_class": fit_per_class}


def cross_fitted(logp: np.ndarray, y: np.ndarray, groups: np.ndarray, fit, folds: int, rng: np.random.Generator) -> float:
    """Weighted F1 over all rows, each fold predicted with offsets fitted on the other folds' dialogues."""
    dialogues = rng.permutation(np.unique(groups))
    fold_of = {d: i % folds for i, d in enumerate(dialogues)}
    fold = np.array([fold_of[g] for g in groups])
    pred = np.empty_like(y)
    for f in range(folds):
        held = fold == f
        offsets = fit(logp[~held], y[~held])
        pred[held] = (logp[held] + offsets).argmax(1)
    return weighted_f1(y, pred, logp.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with predictions_dev.csv")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "meld_text_offsets.json"))
    args = parser.parse_args()

    per_run = {}
    for run in args.runs:
        ids, labels, names, probs = read_probabilities(run)
        y = np.array([names.index(label) for label in labels])
        logp = np.log(np.clip(probs, 1e-4, None))
        if not all("_utt" in i for i in ids):  # MELD's ids name their dialogue: split/dia{D}_utt{U}
            raise SystemExit(f"{run}: dev ids are not MELD's split/dia{{D}}_utt{{U}}; the folds need each row's dialogue")
        groups = np.array([i.rsplit("_utt", 1)[0] for i in ids])
        argmax = weighted_f1(y, logp.argmax(1), len(names))
        row = {"argmax": round(argmax, 2)}
        for rule, fit in RULES.items():
            offsets = fit(logp, y)
            rng = np.random.default_rng(args.seed)
            crossed = [cross_fitted(logp, y, groups, fit, args.folds, rng) for _ in range(args.repeats)]
            row[rule] = {"in_sample": round(weighted_f1(y, (logp + offsets).argmax(1), len(names)), 2),
                         "offsets": dict(zip(names, np.round(offsets, 2).tolist())),
                         "cross_fitted": mean_std(crossed),
                         "gain": round(float(np.mean(crossed)) - argmax, 2)}
        per_run[str(run)] = row
        print(f"{run}: argmax {argmax:.2f}; " + "; ".join(
            f"{rule} in-sample {row[rule]['in_sample']:.2f}, cross-fitted {row[rule]['cross_fitted']['mean']:.2f} "
            f"± {row[rule]['cross_fitted']['std']:.2f} ({row[rule]['gain']:+.2f})" for rule in RULES))
    summary = {"argmax": mean_std([r["argmax"] for r in per_run.values()])}
    for rule in RULES:
        summary[rule] = {"cross_fitted": mean_std([r[rule]["cross_fitted"]["mean"] for r in per_run.values()]),
                         "gain": mean_std([r[rule]["gain"] for r in per_run.values()]),
                         "in_sample": mean_std([r[rule]["in_sample"] for r in per_run.values()])}
    print(f"\n{len(per_run)} runs: argmax {summary['argmax']['mean']:.2f}; " + "; ".join(
        f"{rule} cross-fitted {summary[rule]['cross_fitted']['mean']:.2f} (gain {summary[rule]['gain']['mean']:+.2f} "
        f"± {summary[rule]['gain']['std']:.2f}, in-sample {summary[rule]['in_sample']['mean']:.2f})" for rule in RULES))
    path = write_json(args.out, {"benchmark": "meld_text_offsets", "folds": args.folds, "repeats": args.repeats,
                                 "runs": per_run, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
