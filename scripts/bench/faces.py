"""Face benchmark: facial-expression images, a timm backbone trained from scratch (with and without
colour), HOG descriptors with a linear projection and HOG with a linear classifier, identity-disjoint
5-fold cross-validation, beside the colour-only rule.

The confound (shared/data/facial_expressions/SOURCE.md): disgust and sadness come mostly from RGB
photos of film actors, the other classes from greyscale news crops, so colour alone predicts labels.
The timm encoder's ``grayscale: true`` removes colour inside the model (luma replicated to 3
channels); whatever else differs between the two photo sources (framing, size, style) survives it,
so both variants are also scored separately on the greyscale and the colour test images.

Protocol: StratifiedGroupKFold by identity (no person in both train and test); inside each training
fold, 20% of its identities are held out to select the epoch (accuracy); the test fold is evaluated
once with the selected model. A config that keeps its final epoch (``train.selection: last``, as
``resnet18_refit.yaml``) selects nothing, so it trains on the validation identities too. Methods with a
grid (``hog linear``: its L2 penalty) keep their final epoch as well: each value is scored by a 4-fold
cross-validation over the training fold's identities (validation included), and the chosen one is
refitted on all of them, as a plain tool is used. ``HOG + LR, refit`` chooses its C the same way.

    python scripts/bench/faces.py
    python scripts/bench/faces.py --methods hog --out scripts/bench/results/faces_hog.json
    python scripts/bench/faces.py --methods colour greyscale model.encoders.vision.image_size=96
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO, RESULTS, SHARED_DATA, fmt, mean_std, peak_rss_mb, write_json
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold

from mmemo import load_config
from mmemo.config import Config
from mmemo.data.examples import Example, Splits
from mmemo.data.loading import apply_labels
from mmemo.data.readers.manifest import read_manifest
from mmemo.labels import LabelSet, get_label_set
from mmemo.training.metrics import compute_metrics
from mmemo.training.trainer import Trainer

COLUMNS = {"image": "image", "label": "emotion", "speaker": "identity"}
CONFIGS = REPO / "scripts" / "bench" / "configs" / "faces"
# method -> (config, overrides); HOG works on luma, so it has no colour variant
METHODS = {
    "colour": (CONFIGS / "resnet18.yaml", ["model.encoders.vision.grayscale=false"]),
    "greyscale": (CONFIGS / "resnet18.yaml", ["model.encoders.vision.grayscale=true"]),
    "colour refit": (CONFIGS / "resnet18_refit.yaml", ["model.encoders.vision.grayscale=false"]),
    "greyscale refit": (CONFIGS / "resnet18_refit.yaml", ["model.encoders.vision.grayscale=true"]),
    "hog": (CONFIGS / "hog.yaml", []),
    "hog linear": (CONFIGS / "hog_linear.yaml", []),
}
# method -> (key, values) chosen by cross-validation over the training identities, then refitted on all of
# them; the first value wins ties, so the strongest penalty comes first
GRIDS = {"hog linear": ("l2", [0.5, 0.05, 0.005])}  # the weight of the l2 loss term


def grid_override(term: str, weight: Any) -> str:
    """A grid value as an override: ``train.loss_terms`` holding that term at that weight."""
    return f"train.loss_terms=[{{name: {term}, weight: {weight}}}]"
INNER_FOLDS = 4


def is_colour(ex: Example) -> bool:
    return ex.meta["row"]["mode"] != "L"


def scores(examples: list[Example], predictions: list[str], labels: tuple[str, ...]) -> dict:
    """Accuracy and macro F1 over all examples, and accuracy on the greyscale and the colour ones
    (None where a fold has no image of that kind)."""
    index = {name: i for i, name in enumerate(labels)}
    m = compute_metrics([index[e.label] for e in examples], [index[p] for p in predictions], labels)
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    for subset in ("grey", "colour"):
        hits = [e.label == p for e, p in zip(examples, predictions) if is_colour(e) == (subset == "colour")]
        out[f"accuracy_{subset}"] = round(100 * sum(hits) / len(hits), 2) if hits else None
    return out


def split_folds(examples: list[Example], n_folds: int, seed: int) -> list[tuple[list[Example], list[Example], list[Example]]]:
    """(train, validation, test) per fold; identities never cross any of the three."""
    labels = [e.label for e in examples]
    groups = [e.speaker for e in examples]
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    out = []
    for fold, (train_idx, test_idx) in enumerate(outer.split(np.zeros(len(examples)), labels, groups)):
        inner = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed + fold)
        fit_idx, val_idx = next(inner.split(train_idx, groups=[groups[i] for i in train_idx]))
        out.append(([examples[train_idx[i]] for i in fit_idx], [examples[train_idx[i]] for i in val_idx],
                    [examples[i] for i in test_idx]))
    return out


def inner_folds(examples: list[Example], k: int = INNER_FOLDS) -> list[tuple[list[Example], list[Example]]]:
    """(fit, held out) k times over ``examples``; identities never cross, every example is held out once."""
    split = GroupKFold(n_splits=k).split(np.zeros(len(examples)), groups=[e.speaker for e in examples])
    return [([examples[i] for i in fit], [examples[i] for i in held]) for fit, held in split]


def choose(values: list, score: Callable[[Any, int, list[Example], list[Example]], float],
           inner: list[tuple[list[Example], list[Example]]]) -> Any:
    """The value with the most held-out hits over the inner folds (the first of equals); ``score(value,
    i, fit, held)`` is the accuracy in percent on ``held`` of a model fitted on ``fit`` (inner fold i)."""
    hits = [sum(score(v, i, fit, held) * len(held) for i, (fit, held) in enumerate(inner)) for v in values]
    return values[hits.index(max(hits))]


def hog_logistic_regression(folds, size: int = 128, refit: bool = False) -> list[list[str]]:
    """The plain-tools baseline: the same HOG (mmemo's, scikit-image's to 1e-6) and scikit-learn's logistic
    regression, fitted on each fold's training identities with C chosen on its validation identities
    (``refit``: C chosen by cross-validation over training and validation identities, and fitted on all)."""
    from sklearn.linear_model import LogisticRegression

    from mmemo.data.media import load_image
    from mmemo.models.encoders.vision import hog_features

    feats: dict[str, np.ndarray] = {}

    def matrix(examples: list[Example]) -> np.ndarray:
        for e in examples:
            if e.id not in feats:
                feats[e.id] = hog_features(load_image(e.image, size).float())[0].numpy()
        return np.stack([feats[e.id] for e in examples])

    out = []
    for train, val, test in folds:
        if refit:
            def score(c: float, _: int, fit: list[Example], held: list[Example]) -> float:
                model = LogisticRegression(C=c, max_iter=3000).fit(matrix(fit), [e.label for e in fit])
                return 100 * model.score(matrix(held), [e.label for e in held])

            best = LogisticRegression(C=choose([0.01, 0.1, 1.0], score, inner_folds(train + val)), max_iter=3000)
            best.fit(matrix(train + val), [e.label for e in train + val])
        else:
            fitted = [LogisticRegression(C=c, max_iter=3000).fit(matrix(train), [e.label for e in train]) for c in (0.01, 0.1, 1.0)]
            best = max(fitted, key=lambda m: m.score(matrix(val), [e.label for e in val]))  # first of equals: the smallest C
        out.append(best.predict(matrix(test)).tolist())
    return out


def train_quietly(config: Config, run_dir: Path, splits: dict[str, list[Example]], label_set: LabelSet) -> float:
    """Train with the log in ``run_dir/train.log``; the selected epoch's metric on ``dev``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return Trainer(config, run_dir=run_dir, splits=Splits(splits), label_set=label_set).fit().best_metric


def trainer_score(config_path: Path, overrides: list[str], key: str, run_dir: Path, label_set: LabelSet) -> Callable:
    """``score`` for ``choose``: train with ``key=value`` on the inner fold, its final epoch's accuracy on
    the held-out identities (``run_dir/key=value/inner<i>``)."""
    def score(value: Any, i: int, fit: list[Example], held: list[Example]) -> float:
        config = load_config(config_path, [*overrides, grid_override(key, value), "train.eval_test=false"])
        return train_quietly(config, run_dir / f"{key}={value}" / f"inner{i}", {"train": fit, "dev": held}, label_set)

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "facial_expressions"))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="in scripts/bench/configs/faces/: colour/greyscale: resnet18.yaml; "
                             "colour refit/greyscale refit: resnet18_refit.yaml; hog: hog.yaml; hog linear: hog_linear.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench" / "faces"))
    parser.add_argument("--out", default=str(RESULTS / "faces.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    label_set = get_label_set("faces8")
    manifest = Path(args.data) / "labels.csv"
    examples = apply_labels(read_manifest(manifest, columns=COLUMNS)["train"], label_set, {}, "all")
    folds = split_folds(examples, args.folds, args.seed)
    for train, val, test in folds:
        assert not ({e.speaker for e in test} & {e.speaker for e in train + val}) and not ({e.speaker for e in val} & {e.speaker for e in train})

    predictions: dict[str, list[list[str]]] = {"majority class": [], "colour-only rule": [],
                                               "HOG + logistic regression": hog_logistic_regression(folds),
                                               "HOG + LR, refit": hog_logistic_regression(folds, refit=True),
                                               **{m: [] for m in args.methods}}
    chosen: dict[str, list] = {}
    minutes: dict[str, float] = {}
    for train, _, test in folds:
        majority = Counter(e.label for e in train).most_common(1)[0][0]
        predictions["majority class"].append([majority] * len(test))
        predictions["colour-only rule"].append(["disgust" if is_colour(e) else "happiness" for e in test])
    for variant in args.methods:
        config_path, overrides = METHODS[variant]
        start = time.time()
        for fold, (train, val, test) in enumerate(folds):
            base = [f"data.path={manifest}", f"train.seed={args.seed + fold}", "train.progress=false",
                    *overrides, *args.overrides]
            run_dir = Path(args.runs) / variant / f"fold{fold}"
            if variant in GRIDS:
                key, values = GRIDS[variant]
                score = trainer_score(config_path, base, key, run_dir, label_set)
                best = choose(values, score, inner_folds(train + val))
                chosen.setdefault(variant, []).append(best)
                # the final epoch is kept, so "dev" (training identities here) selects nothing
                train_quietly(load_config(config_path, [*base, grid_override(key, best)]), run_dir,
                              {"train": train + val, "dev": val, "test": test}, label_set)
            else:
                config = load_config(config_path, base)
                # a config that keeps its final epoch selects nothing, so every training identity trains
                fit = train + val if config.train.selection == "last" else train
                train_quietly(config, run_dir, {"train": fit, "dev": val, "test": test}, label_set)
            by_id = {row["id"]: row["prediction"] for row in csv.DictReader(open(run_dir / "predictions_test.csv"))}
            predictions[variant].append([by_id[e.id] for e in test])
            print(f"{variant} fold {fold}: accuracy {scores(test, predictions[variant][-1], label_set.names)['accuracy']:.1f}",
                  flush=True)
        minutes[variant] = round((time.time() - start) / 60, 1)

    tests = [test for _, _, test in folds]
    results = {}
    for method, per_fold in predictions.items():
        fold_scores = [scores(test, pred, label_set.names) for test, pred in zip(tests, per_fold)]
        results[method] = {
            "pooled": scores([e for t in tests for e in t], [p for pred in per_fold for p in pred], label_set.names),
            "over_folds": {k: mean_std([s[k] for s in fold_scores if s[k] is not None]) for k in fold_scores[0]},
            "folds": fold_scores, "minutes": minutes.get(method),
        }
        if method in chosen:
            results[method]["chosen"] = {GRIDS[method][0]: chosen[method]}
    n_colour = sum(is_colour(e) for e in examples)
    print(f"\nfaces: {len(examples)} images ({n_colour} colour, {len(examples) - n_colour} greyscale), "
          f"{len({e.speaker for e in examples})} identities, {args.folds} identity-disjoint folds")
    print(f"{'method':<28}{'accuracy':>14}{'macro F1':>14}  | pooled: {'accuracy':>8}{'macro F1':>9}"
          f"{'grey':>7}{'colour':>7}")
    for method, r in results.items():
        o, p = r["over_folds"], r["pooled"]
        print(f"{method:<28}{fmt(o['accuracy']):>14}{fmt(o['macro_f1']):>14}  | {'':>8}{p['accuracy']:8.1f}{p['macro_f1']:9.1f}"
              f"{p['accuracy_grey']:7.1f}{p['accuracy_colour']:7.1f}")
    print("(mean ± std over folds, then over all folds' predictions together, and its accuracy on the "
          f"{len(examples) - n_colour} greyscale and the {n_colour} colour images; anchors, shared/ANCHORS.md: colour-only rule ~12 points over majority; "
          "HOG + linear SVM and resnet18 from scratch ~40-45% accuracy)")
    configs = {m: str(METHODS[m][0].relative_to(REPO)) for m in args.methods}
    path = write_json(args.out, {"benchmark": "faces", "configs": configs, "overrides": args.overrides,
                                 "folds": args.folds, "seed": args.seed, "results": results, "peak_rss_mb": peak_rss_mb()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
