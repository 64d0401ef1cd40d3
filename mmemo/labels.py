"""Label sets. Order matters: it is the order of the head's outputs and of every saved model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mmemo.errors import LabelError

# The class index of a row without a label for a head (e.g. an auxiliary corpus's example, for the emotion
# head): the losses skip it.
IGNORE = -1

LABEL_SETS: dict[str, tuple[str, ...]] = {
    # MELD's official index order (declare-lab/MELD README).
    "meld7": ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    "meld_sentiment": ("neutral", "positive", "negative"),
    "emorynlp7": ("neutral", "joyful", "peaceful", "powerful", "scared", "mad", "sad"),
    "ravdess8": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "emodb7": ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
    "faces8": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
}

# Maps from other corpora onto MELD's seven emotions (SOURCE.md of each dataset); None drops the class.
TO_MELD7: dict[str, dict[str, str | None]] = {
    "ravdess8": {"happy": "joy", "sad": "sadness", "angry": "anger", "fearful": "fear",
                 "surprised": "surprise", "calm": None},
    "emodb7": {"happiness": "joy", "boredom": None},
    "faces8": {"happiness": "joy", "contempt": None},
}


class LabelSet:
    def __init__(self, names: Sequence[str], name: str = "custom"):
        self.name = name
        self.names = tuple(str(n) for n in names)
        if len(set(self.names)) != len(self.names):
            raise LabelError(f"label set {name}: duplicate labels in {list(self.names)}")
        self._index = {n.strip().lower(): i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, label: str) -> bool:
        return str(label).strip().lower() in self._index

    def index(self, label: str, where: str = "") -> int:
        key = str(label).strip().lower()
        if key not in self._index:
            loc = f"{where}: " if where else ""
            raise LabelError(f"{loc}label '{label}' is not in label set {self.name} ({', '.join(self.names)})")
        return self._index[key]

    def __repr__(self) -> str:
        return f"LabelSet({self.name}: {', '.join(self.names)})"


def register_label_set(name: str, labels: Sequence[str]) -> None:
    """Make ``label_set: name`` mean ``labels`` (in this order, the head's): a reader of a new corpus declares
    its classes here. Registering another order under a name that exists is an error."""
    labels = tuple(str(label) for label in labels)
    if name in LABEL_SETS and LABEL_SETS[name] != labels:
        raise LabelError(f"label set {name} is already {list(LABEL_SETS[name])}")
    LabelSet(labels, name)  # checks for duplicates
    LABEL_SETS[name] = labels


def get_label_set(name: str | None = None, labels: Iterable[str] | None = None) -> LabelSet:
    if labels:
        return LabelSet(list(labels), name or "custom")
    if name not in LABEL_SETS:
        raise LabelError(f"unknown label set '{name}'; known: {', '.join(LABEL_SETS)} (or give data.labels)")
    return LabelSet(LABEL_SETS[name], name)
