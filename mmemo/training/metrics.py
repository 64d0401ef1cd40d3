"""Classification metrics (scikit-learn), in percent, and the confusion-matrix figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, weighted and macro F1, unweighted average recall (UAR), per-class F1, confusion.

    Macro scores average over the classes present in ``y_true`` or ``y_pred``, as scikit-learn does
    when ``labels`` is not forced; a class never seen in evaluation cannot drag the mean to zero.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    idx = list(range(len(labels)))
    if len(y_true) == 0:
        raise ValueError("no examples to evaluate")
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    pct = lambda x: round(float(x) * 100, 2)  # noqa: E731
    return {
        "n": int(len(y_true)),
        "accuracy": pct(accuracy_score(y_true, y_pred)),
        "weighted_f1": pct(f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "macro_f1": pct(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar": pct(recall_score(y_true, y_pred, labels=sorted(set(y_true.tolist())), average="macro", zero_division=0)),
        "per_class": {
            name: {"precision": pct(p[i]), "recall": pct(r[i]), "f1": pct(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def format_metrics(metrics: dict, keys: Sequence[str] = ("accuracy", "weighted_f1", "macro_f1", "uar")) -> str:
    return "  ".join(f"{k} {metrics[k]:.2f}" for k in keys if k in metrics)


def format_table(metrics: dict, labels: Sequence[str], title: str = "") -> str:
    """A plain-text table: headline metrics, then per-class precision/recall/F1/support."""
    lines = [title] if title else []
    lines.append(format_metrics(metrics) + f"  (n={metrics['n']})")
    width = max(len(lab) for lab in labels)
    lines.append(f"{'class':<{width}}  {'prec':>6} {'recall':>6} {'f1':>6} {'n':>5}")
    for lab in labels:
        c = metrics["per_class"][lab]
        lines.append(f"{lab:<{width}}  {c['precision']:6.1f} {c['recall']:6.1f} {c['f1']:6.1f} {c['support']:5d}")
    return "\n".join(lines)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
