"""predict_batch on a datasets.Dataset or rows of one: a column map, unused columns ignored, every value datasets
gives for media (path/bytes dicts, decoders, array dicts, PIL images), results in input order as columns."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmemo.data.demo import make_frames, make_voice
from mmemo.inference import EmotionRecognizer
from mmemo.inference.prediction import PREDICTION_COLUMNS, prediction_columns
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from tests.conftest import tiny_config
from tests.hf_utils import demo_dataset_dict

datasets = pytest.importorskip("datasets")
COLUMNS = {"text": "utterance_text", "video": "clip"}


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    config = tiny_config(None)
    torch.manual_seed(0)
    model = EmotionModel(config.model, 7).eval()
    folder = model.save_pretrained(tmp_path_factory.mktemp("models") / "m", config, get_label_set("meld7"))
    return EmotionRecognizer.from_pretrained(folder, device="cpu")


@pytest.fixture(scope="module")
def dev(demo_tree):
    return demo_dataset_dict(demo_tree)["validation"]


def _same(a, b):
    assert [p.label for p in a] == [p.label for p in b]
    assert [p.modalities for p in a] == [p.modalities for p in b]
    for x, y in zip(a, b):
        assert x.probs == pytest.approx(y.probs, abs=1e-5)


def test_a_dataset_with_a_column_map_equals_the_same_rows_as_dicts_of_paths(rec, dev):
    ours = rec.predict_batch(dev, columns=COLUMNS, progress=False)  # id, emotion, speaker, unused: ignored or kept
    plain = rec.predict_batch([{"text": r["utterance_text"], "video": r["clip"]["path"]}
                               for r in dev.cast_column("clip", datasets.Video(decode=False))], progress=False)
    _same(ours, plain)
    assert [p.id for p in ours] == list(dev["id"])  # the dataset's id column names each prediction, in input order
    assert all(p.modalities == ["text", "audio", "vision"] for p in ours)  # the clip's track fed the audio


def test_decoded_rows_are_read_as_what_they_were_decoded_from(rec, dev):
    decoded = list(dev)  # Video cells come as torchcodec VideoDecoders, the ClassLabel as an int
    assert type(decoded[0]["clip"]).__name__ == "VideoDecoder"
    _same(rec.predict_batch(decoded, columns=COLUMNS, progress=False), rec.predict_batch(dev, columns=COLUMNS, progress=False))
    with pytest.raises(TypeError, match="unknown key"):  # without a column map, an unknown key is a typo
        rec.predict_batch([{"text": "hi", "vidoe": "x.mp4"}], progress=False)


def test_audio_decoders_array_dicts_bytes_and_images_from_datasets(rec, tmp_path):
    rng = np.random.default_rng(0)
    voices = [make_voice(rng, "joy", 1.0, 16000) for _ in range(3)]
    wavs = []
    for v in voices:
        buf = io.BytesIO()
        sf.write(buf, v, 16000, format="WAV", subtype="FLOAT")
        wavs.append(buf.getvalue())
    faces = [Image.fromarray(make_frames(rng, "anger", 2, 48)[0]) for _ in range(3)]
    ds = datasets.Dataset.from_dict({"wav": [{"path": None, "bytes": b} for b in wavs], "face": faces, "n": [1, 2, 3]})
    ds = ds.cast_column("wav", datasets.Audio()).cast_column("face", datasets.Image())
    cols = {"audio": "wav", "image": "face"}
    reference = rec.predict_batch([{"audio": (v.astype(np.float32), 16000), "image": f} for v, f in zip(voices, faces)],
                                  progress=False)
    row = ds[0]
    assert type(row["wav"]).__name__ == "AudioDecoder" and isinstance(row["face"], Image.Image)
    _same(rec.predict_batch(list(ds), columns=cols, progress=False), reference)  # decoders and PIL images
    _same(rec.predict_batch(ds, columns=cols, progress=False), reference)  # the dataset: bytes, undecoded
    arrays = [{"wav": {"array": v, "sampling_rate": 16000}, "face": f} for v, f in zip(voices, faces)]
    _same(rec.predict_batch(arrays, columns=cols, progress=False), reference)
    _same(rec.predict_batch([{"audio": w, "image": f} for w, f in zip(wavs, faces)], progress=False), reference)


def test_results_become_columns_with_add_column_or_map(rec, dev):
    preds = rec.predict_batch(dev, columns=COLUMNS, progress=False)
    cols = prediction_columns(preds, rec.labels)
    assert tuple(cols) == PREDICTION_COLUMNS
    scored = dev
    for name, values in cols.items():
        scored = scored.add_column(name, values)
    assert scored["pred_label"] == [p.label for p in preds]
    assert scored[0]["pred_probs"] == pytest.approx([preds[0].probs[n] for n in rec.labels])

    mapped = dev.map(rec, batched=True, batch_size=3, fn_kwargs={"columns": COLUMNS}, load_from_cache_file=False)
    assert mapped.column_names == dev.column_names + list(PREDICTION_COLUMNS)
    assert mapped["pred_label"] == [p.label for p in preds] and mapped["unused"] == dev["unused"]
    assert mapped["pred_score"] == pytest.approx([p.probs[p.label] for p in preds], abs=1e-5)


def test_a_row_without_usable_input_gets_an_error_column_not_a_failure(rec):
    ds = datasets.Dataset.from_dict({"text": ["fine", None], "audio": [None, {"bytes": b"junk", "path": "x.wav"}]})
    cols = prediction_columns(rec.predict_batch(ds, progress=False), rec.labels)
    assert cols["pred_error"][0] is None and cols["pred_label"][0] in rec.labels
    assert cols["pred_label"][1] is None and "cannot decode audio" in cols["pred_error"][1]
    assert "dataset row 1: audio column 'audio' (x.wav)" in cols["pred_error"][1]
