"""data.source: hf — Hugging Face datasets built offline (save_to_disk, Parquet bytes, audiofolder, the csv
builder), trained, evaluated and predicted from; media decoded by mmemo, cached by content, reported by row."""

import csv
import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import yaml

from mmemo.config import load_config
from mmemo.data.demo import EMOTIONS, make_voice
from mmemo.data.loading import load_splits
from mmemo.data.media import MediaBytes
from mmemo.data.readers.meld import read_meld
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import LabelError
from mmemo.training.evaluate import evaluate
from mmemo.training.trainer import train
from tests.conftest import tiny_overrides
from tests.hf_utils import HF_COLUMNS, demo_dataset_dict

datasets = pytest.importorskip("datasets")


def hf_config(data: dict, modalities=("text", "audio", "vision"), **extra):
    cfg = tiny_overrides(None, modalities, **extra)
    cfg["data"] = {"source": "hf", "num_frames": 3, "max_audio_seconds": 3.0, **data}
    return load_config(None, cfg)


@pytest.fixture(scope="module")
def disk_dataset(demo_tree, tmp_path_factory):
    """The demo tree as a save_to_disk folder whose Video column holds the clips' bytes."""
    folder = tmp_path_factory.mktemp("hf") / "demo_ds"
    demo_dataset_dict(demo_tree, video_bytes=True).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def disk_run(disk_dataset, tmp_path_factory):
    config = hf_config({"load_from_disk": str(disk_dataset), "columns": HF_COLUMNS})
    return train(config, run_dir=tmp_path_factory.mktemp("runs") / "hf")


def test_save_to_disk_dataset_trains_with_classlabel_names_and_reports_bad_cells_by_row(disk_run):
    run = disk_run.run_dir
    # the ClassLabel's names are the classes, in its order, in the saved model and the run's config
    assert json.loads((run / "best" / "labels.json").read_text())["labels"] == list(EMOTIONS)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["labels"] == list(EMOTIONS)
    issues = {(r["example_id"], r["modality"], r["reason"]): r["path"] for r in csv.DictReader(open(run / "media_issues.csv"))}
    # train row 0 has no clip (no value, not an issue); row 1's bytes are corrupt; row 2's clip has no audio track:
    # the video column fed the audio from its track, and every undecodable cell is named by its row
    assert set(issues) == {("train/dia0_utt1", "audio", "cannot decode audio"),
                           ("train/dia0_utt1", "vision", "cannot decode video"),
                           ("train/dia0_utt2", "audio", "no audio track")}
    assert issues[("train/dia0_utt1", "vision", "cannot decode video")] == "hf train row 1: video column 'clip' (dia0_utt1.mp4)"
    assert issues[("train/dia0_utt2", "audio", "no audio track")].startswith("hf train row 2: video column 'clip'")
    assert disk_run.test["n"] == 8 and disk_run.dev["n"] == 8


def test_a_dataset_run_evaluates_and_its_model_predicts_from_bytes(disk_run, demo_tree):
    metrics = evaluate(disk_run.run_dir, "test", progress=False)
    assert metrics["n"] == 8
    assert json.loads((disk_run.run_dir / "eval_test.json").read_text())["n"] == 8
    rec = EmotionRecognizer.from_pretrained(disk_run.run_dir, device="cpu")
    clip = demo_tree / "dev_splits_complete" / "dia0_utt0.mp4"
    from_bytes = rec.predict(video=clip.read_bytes(), text="hello")
    from_file = rec.predict(video=str(clip), text="hello")
    assert from_bytes.modalities == ["text", "audio", "vision"]  # the bytes' audio track, as for the file
    assert from_bytes.probs == pytest.approx(from_file.probs, abs=1e-6)


def _wav_bytes(seed: int, label: str, seconds: float = 0.6) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, make_voice(np.random.default_rng(seed), label, seconds, 16000), 16000, format="WAV")
    return buf.getvalue()


def _audio_rows(n: int = 24) -> dict:
    labels = [EMOTIONS[i % 3] for i in range(n)]
    audio = [{"path": f"u{i}.wav", "bytes": _wav_bytes(i, labels[i])} for i in range(n)]
    audio[5] = {"path": "u5.wav", "bytes": b"RIFF-not-really-a-wav"}
    return {"id": [f"u{i}" for i in range(n)], "text": [f"utterance {i} {labels[i]}" for i in range(n)],
            "audio": audio, "emotion": labels, "speaker": [f"s{i % 6}" for i in range(n)]}


def test_parquet_bytes_train_with_a_speaker_split_and_a_cache_keyed_by_content(tmp_path, caplog):
    ds = datasets.Dataset.from_dict(_audio_rows()).cast_column("audio", datasets.Audio())
    first, second = tmp_path / "a.parquet", tmp_path / "copy_elsewhere.parquet"
    ds.to_parquet(str(first))
    ds.to_parquet(str(second))
    data = {"path": str(first), "labels": list(EMOTIONS[:3]), "columns": {"label": "emotion"},
            "split": {"by": "speaker", "dev": 0.2, "test": 0.2, "seed": 1}, "cache_dir": str(tmp_path / "cache")}
    extra = {"model__encoders__audio__freeze": True}
    config = hf_config(data, ("text", "audio"), **extra)
    splits, _ = load_splits(config)
    assert isinstance(splits["train"][0].audio, MediaBytes)  # read undecoded: the file's bytes
    speakers = {name: {ex.speaker for ex in splits[name]} for name in ("train", "dev", "test")}
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["dev"] & speakers["test"]) and all(speakers.values())

    with caplog.at_level(logging.INFO, logger="mmemo.training.cache"):
        result = train(config, run_dir=tmp_path / "run1")
        assert "24 computed" in caplog.text
        caplog.clear()
        # the same bytes from another file: every embedding is found by content, none computed again
        train(hf_config({**data, "path": str(second)}, ("text", "audio"), **extra), run_dir=tmp_path / "run2")
        assert "0 computed, 24 stored" in caplog.text
    rows = list(csv.DictReader(open(result.run_dir / "media_issues.csv")))
    assert [(r["example_id"], r["modality"], r["reason"]) for r in rows] == [("u5", "audio", "cannot decode audio")]
    assert rows[0]["path"] == "hf train row 5: audio column 'audio' (u5.wav)"
    # the split the run used is written beside it, and reads back as the same split
    assigned = {r["id"]: r["split"] for r in csv.DictReader(open(result.run_dir / "splits.csv"))}
    assert {i for i, s in assigned.items() if s == "dev"} == {ex.id for ex in splits["dev"]}
    again, _ = load_splits(hf_config({**data, "split": {"file": str(result.run_dir)}}, ("text", "audio")))
    assert [ex.id for ex in again["test"]] == [ex.id for ex in splits["test"]]


def test_audiofolder_with_metadata_csv_reads_paths_and_trains(tmp_path):
    folder = tmp_path / "voices"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    rows = []
    for i in range(12):
        split = "test" if i % 4 == 0 else "train"
        label = EMOTIONS[i % 2]
        (folder / split / f"v{i}.wav").write_bytes(_wav_bytes(i, label))
        rows.append((split, f"v{i}.wav", f"line {i}", label))
    for split in ("train", "test"):
        with open(folder / split / "metadata.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file_name", "transcription", "emotion"])
            w.writerows(r[1:] for r in rows if r[0] == split)
    data = {"path": "audiofolder", "data_dir": str(folder), "labels": ["neutral", "joy"],
            "columns": {"text": "transcription", "label": "emotion"}, "splits": {"train": "train", "dev": "test"}}
    config = hf_config(data, ("text", "audio"))
    splits, _ = load_splits(config)
    assert {k: len(v) for k, v in splits.splits.items()} == {"train": 9, "dev": 3}
    ex = splits["train"][0]
    assert ex.audio.endswith(".wav") and (folder / "train" / ex.audio.rsplit("/", 1)[-1]).exists()
    assert ex.text.startswith("line ") and ex.label in ("neutral", "joy")
    result = train(config, run_dir=tmp_path / "run")
    assert result.dev["n"] == 3 and not result.media_issues


def test_meld_csvs_through_the_csv_builder_give_the_meld_readers_examples(shared_data):
    meld = shared_data / "meld"
    config = hf_config({"path": str(meld / "dev_sent_emo.csv"), "label_set": "meld7",
                        "columns": {"text": "Utterance", "label": "Emotion", "speaker": "Speaker",
                                    "dialogue": "Dialogue_ID", "utterance": "Utterance_ID"}}, ("text",))
    ours, _ = load_splits(config)
    theirs = read_meld(meld, splits=("dev",))["dev"]
    assert len(ours["train"]) == len(theirs) == 1109
    for a, b in zip(ours["train"], theirs):
        assert (a.text, a.label, a.speaker, a.utterance_id) == (b.text, b.label.lower(), b.speaker, b.utterance_id)
        assert f"dev/{a.dialogue_id}" == b.dialogue_id
    assert any("\u2019" in ex.text or "'" in ex.text for ex in ours["train"])  # legacy apostrophes mended alike


def test_a_missing_column_names_it_and_the_columns_there_are(disk_dataset):
    config = hf_config({"load_from_disk": str(disk_dataset), "columns": {**HF_COLUMNS, "speaker": "actor"}})
    with pytest.raises(DataError, match=r"column 'actor' \(for speaker\) not found; columns are id, utterance_text, "
                                        r"clip, emotion, speaker, unused"):
        load_splits(config)


def test_a_classlabel_name_outside_the_label_set_is_named(disk_dataset):
    config = hf_config({"load_from_disk": str(disk_dataset), "columns": HF_COLUMNS,
                        "labels": ["neutral", "joy", "surprise"]})
    with pytest.raises(LabelError, match=r"hf train row \d+ \(split train\): label '(anger|sadness|disgust|fear)' is not "
                                         r"in label set custom \(neutral, joy, surprise\)"):
        load_splits(config)


def test_a_label_index_outside_the_classlabel_is_named():
    from mmemo.data.readers.hf import _class_name

    with pytest.raises(DataError, match=r"row 3: label 9 is outside the ClassLabel column 'emotion' \(names: a, b\)"):
        _class_name(9, ["a", "b"], "emotion", "row 3: label")
    assert _class_name(-1, ["a", "b"], "emotion", "row 3") is None and _class_name(1, ["a", "b"], "emotion", "") == "b"


def test_no_label_set_and_no_classlabel_is_an_error(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["joy", "anger"]})
    ds.to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"data.label_set: none given, and the source declares no classes"):
        load_splits(hf_config({"path": str(tmp_path / "t.parquet")}, ("text",)))
