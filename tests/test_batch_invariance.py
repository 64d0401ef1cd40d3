"""An input's prediction does not depend on what else is in its batch: padding never leaks into a result."""

import numpy as np
import pytest
import torch

from mmemo.inference import EmotionRecognizer
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from tests.conftest import TINY_WAV2VEC2, tiny_config


def _inputs(n: int = 8) -> list[dict]:
    """Texts of 1 to ~25 words, audio of 0.2 to 3 s, a video of 3 frames or a still image: lengths far apart."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        seconds = [0.2, 3.0, 0.5, 2.2, 1.0, 0.3, 2.8, 1.5][i % 8]
        t = np.arange(int(16000 * seconds)) / 16000
        wave = (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
        row = {"id": str(i), "text": " ".join(["fine"] * (1 + 3 * i)), "audio": (wave, 16000)}
        pixels = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
        if i % 2:
            row["video"] = pixels
        else:
            row["image"] = pixels[0]
        rows.append(row)
    return rows


@pytest.mark.parametrize("audio, fusion", [("logmel_cnn", "concat"), ("logmel_cnn", "cross_attention"),
                                           ("wav2vec2", "bottleneck"), ("wav2vec2", "late")])
def test_probabilities_do_not_depend_on_batch_mates_or_batch_size(audio, fusion):
    extra = {"model__fusion": {"name": fusion, "dim": 32}}
    if audio == "wav2vec2":  # a group-norm front end, which takes no attention mask
        extra["model__encoders__audio"] = dict(TINY_WAV2VEC2)
    config = tiny_config(None, **extra)
    labels = get_label_set("meld7")
    torch.manual_seed(0)
    recognizer = EmotionRecognizer(EmotionModel(config.model, len(labels), seed=0), config, labels, device="cpu")
    rows = _inputs()
    probs = {}
    for batch_size in (1, 4, 8):
        preds = recognizer.predict_batch(rows, batch_size=batch_size, progress=False, num_threads=1)
        assert [p.id for p in preds] == [r["id"] for r in rows] and all(p.error is None for p in preds)
        probs[batch_size] = torch.tensor([[p.probs[c] for c in labels.names] for p in preds])
    assert (probs[1] - probs[4]).abs().max() < 1e-5
    assert (probs[1] - probs[8]).abs().max() < 1e-5
    # and the same inputs in another order, with other batch-mates
    order = [7, 0, 5, 2, 3, 6, 1, 4]
    shuffled = recognizer.predict_batch([rows[i] for i in order], batch_size=4, progress=False, num_threads=1)
    again = torch.tensor([[p.probs[c] for c in labels.names] for p in shuffled])
    assert (again - probs[1][order]).abs().max() < 1e-5
