"""Why the `acoustic` encoder trails logistic regression on EmoDB: the classifier, not the features.

The same 196 per-speaker-standardised functionals (``mmemo.models.encoders.audio.AcousticProcessor``),
leave one speaker out, UAR from the confusion matrices summed over folds, classified by:
- scikit-learn logistic regression (the anchor's method, class-balanced, C=1), fitted to convergence;
- a linear softmax in torch, AdamW, with and without a (coupled) L2 penalty on the weights in the loss;
- MLPs in torch shaped like the encoder's (hidden layers of 256 and 128, dropout 0.5), with and without it;
- the linear softmax with its L2 coefficient chosen per fold by an inner leave-one-speaker-out on the
  training speakers only (nested: the figure for a coefficient that was not picked on the test speakers).
Minibatches of 16, class-weighted cross-entropy, one-cycle cosine learning rate; the figure is the last
epoch's (no selection). Mean over ``--seeds``.

    PYTHONPATH=scripts/bench python experiments/speech/speech_heads.py            # results/speech_heads.json
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import REPO, SHARED_DATA, mean_std, write_json
from torch import nn

from mmemo import load_config
from mmemo.data.manifest import read_manifest
from mmemo.data.sources import apply_labels
from mmemo.labels import get_label_set
from mmemo.models.encoders.audio import AcousticProcessor

RESULTS = Path(__file__).resolve().parent / "results"  # this experiment's own results

# name -> (hidden layers, dropout, L2 coefficient, learning rate, epochs)
TORCH_HEADS = {
    "linear, AdamW weight decay only": ((), 0.0, 0.0, 1e-2, 120),
    "linear + L2 0.03": ((), 0.0, 0.03, 1e-2, 120),
    "MLP 256, dropout 0.5": ((256,), 0.5, 0.0, 1e-3, 60),
    "MLP 256, dropout 0.5, + L2 0.01": ((256,), 0.5, 0.01, 1e-3, 60),
    "MLP 256-128, dropout 0.5": ((256, 128), 0.5, 0.0, 1e-3, 60),
    "MLP 256-128, dropout 0.5, + L2 0.01": ((256, 128), 0.5, 0.01, 1e-3, 60),
}


@functools.cache
def features(data: Path, overrides: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-speaker standardised functionals, labels and speakers of every EmoDB clip (each setting once)."""
    config = load_config(REPO / "scripts/bench/configs/emodb/acoustic.yaml",
                         ["data.manifest.split_column=null", "data.manifest.splits={}", *overrides])
    label_set = get_label_set("emodb7")
    columns = {"audio": "file", "label": "emotion", "speaker": "speaker"}
    examples = apply_labels(read_manifest(data / "emodb" / "labels.csv", columns=columns)["train"], label_set, {}, "emodb")
    processor = AcousticProcessor(config.model.encoders["audio"], config.data)
    x = np.stack([processor.raw_features(ex) for ex in examples])
    y = np.array([label_set.index(ex.label) for ex in examples])
    s = np.array([ex.speaker for ex in examples])
    for speaker in set(s):  # the same statistics as speaker_norm: each speaker's own clips, labels unseen
        rows = s == speaker
        x[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-3)
    return x.astype(np.float32), y, s


def train_torch(x, y, hidden, dropout, l2, lr, epochs, seed) -> nn.Module:
    torch.manual_seed(seed)
    layers, width = [], x.shape[1]
    for h in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.GELU()]
        width = h
    net = nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(width, int(y.max()) + 1))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    counts = np.bincount(y, minlength=int(y.max()) + 1)
    weight = torch.tensor(len(y) / (len(counts) * counts), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * int(np.ceil(len(y) / 16))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    matrices = [p for p in net.parameters() if p.ndim > 1]
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(16):
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx], weight=weight)
            loss = loss + l2 / 2 * sum((p ** 2).sum() for p in matrices)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def loso_uar(x, y, s, fit_predict) -> float:
    """``fit_predict(x_train, y_train, x_test, train_speakers)`` over every held-out speaker; UAR of all folds."""
    n = int(y.max()) + 1
    confusion = np.zeros((n, n))
    for speaker in sorted(set(s)):
        train, test = s != speaker, s == speaker
        pred = fit_predict(x[train], y[train], x[test], s[train])
        np.add.at(confusion, (y[test], pred), 1)
    return round(100 * float(np.mean(np.diag(confusion) / confusion.sum(1))), 2)


def torch_fit_predict(head: tuple, seed: int):
    def run(x_train, y_train, x_test, _speakers=None):
        net = train_torch(x_train, y_train, *head, seed)
        with torch.no_grad():
            return net(torch.from_numpy(x_test)).argmax(1).numpy()
    return run


L2_GRID = (0.003, 0.01, 0.03, 0.1)


def nested_l2_fit_predict(seed: int, chosen: list[float]):
    """The linear head with its L2 coefficient chosen by leave-one-speaker-out UAR on the training speakers
    alone (the test speaker unseen), then refitted on all of them: an unbiased figure for a chosen L2.
    Each fold's choice is appended to ``chosen``."""
    def run(x_train, y_train, x_test, speakers):
        linear = {l2: ((), 0.0, l2, 1e-2, 120) for l2 in L2_GRID}
        inner = {l2: loso_uar(x_train, y_train, speakers, torch_fit_predict(head, seed)) for l2, head in linear.items()}
        best = max(L2_GRID, key=lambda l2: (inner[l2], l2))
        chosen.append(best)
        return torch_fit_predict(linear[best], seed)(x_train, y_train, x_test)
    return run


def logistic_regression(x_train, y_train, x_test, _speakers=None) -> np.ndarray:
    """The anchor's classifier: scikit-learn logistic regression, class-balanced, C=1."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(x_train, y_train).predict(x_test)


def nested_feature_choice(variants: dict[str, np.ndarray], speakers: np.ndarray, chosen: list[dict]):
    """``fit_predict`` for ``loso_uar`` on the variants side by side (``np.hstack``): logistic regression on
    the variant that leave-one-speaker-out on the training speakers alone prefers (ties to the first
    listed), refitted on them. Each fold's inner scores and choice are appended to ``chosen``."""
    names = list(variants)
    edges = np.cumsum([0, *(x.shape[1] for x in variants.values())])

    def run(x_train, y_train, x_test, train_speakers):
        def block(x, i):
            return x[:, edges[i]:edges[i + 1]]
        inner = [loso_uar(block(x_train, i), y_train, train_speakers, logistic_regression) for i in range(len(names))]
        best = max(range(len(names)), key=lambda i: (inner[i], -i))
        test_speaker = ", ".join(str(t) for t in sorted(set(speakers) - set(train_speakers)))
        chosen.append({"test_speaker": test_speaker, "inner_uar": dict(zip(names, inner)),
                       "chosen": names[best]})
        return logistic_regression(block(x_train, best), y_train, block(x_test, best))
    return run


def summary(per_seed: list[float]) -> dict:
    stats = mean_std(per_seed)
    return {"uar": stats["mean"], "std": stats["std"], "per_seed": per_seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder holding emodb/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "speech_heads.json"))
    parser.add_argument("--feature-choices", nargs="+", metavar="KEY=VALUE", default=[],
                        help="alternative acoustic settings (e.g. model.encoders.audio.n_mels=64 ...=128): logistic "
                             "regression on each, and on the one that inner leave-one-speaker-out picks per fold")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of scripts/bench/configs/emodb/acoustic.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.time()
    x, y, s = features(Path(args.data), tuple(args.overrides))
    results = {}
    if args.feature_choices:
        # a choice that repeats an override gives the same key, so those features are computed once
        variants = {c: features(Path(args.data), tuple(dict.fromkeys([*args.overrides, c])))[0] for c in args.feature_choices}
        for choice, xv in variants.items():
            results[f"scikit-learn logistic regression, {choice}"] = summary([loso_uar(xv, y, s, logistic_regression)])
        folds: list[dict] = []
        uar = loso_uar(np.hstack(list(variants.values())), y, s, nested_feature_choice(variants, s, folds))
        results["scikit-learn logistic regression, setting chosen on the training speakers"] = {
            **summary([uar]), "folds": folds}
    results["scikit-learn logistic regression, balanced, C=1"] = summary([loso_uar(x, y, s, logistic_regression)])
    for name, head in TORCH_HEADS.items():
        results[name] = summary([loso_uar(x, y, s, torch_fit_predict(head, seed)) for seed in args.seeds])
    chosen_per_seed: list[list[float]] = [[] for _ in args.seeds]
    per_seed = [loso_uar(x, y, s, nested_l2_fit_predict(seed, chosen)) for seed, chosen in zip(args.seeds, chosen_per_seed)]
    results[f"linear + L2 chosen from {list(L2_GRID)} on the training speakers"] = {
        **summary(per_seed), "chosen_l2_per_fold": chosen_per_seed}
    print(f"EmoDB, leave one speaker out, per-speaker standardised functionals ({x.shape[1]}), UAR:")
    for name, r in results.items():
        print(f"  {name:<45} {r['uar']:6.2f}  {[f['chosen'] for f in r['folds']] if 'folds' in r else r['per_seed']}")
    path = write_json(args.out, {"benchmark": "speech_heads", "seeds": args.seeds, "overrides": args.overrides,
                                 "n_features": int(x.shape[1]),
                                 "results": results, "minutes": round((time.time() - start) / 60, 1)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
