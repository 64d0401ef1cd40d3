import csv
import json

import pytest
import torch

from mmemo.config import load_config
from mmemo.data.dataset import Collator, EmotionDataset
from mmemo.data.loading import load_splits
from mmemo.data.tables import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import LabelError
from mmemo.models.model import EmotionModel
from mmemo.training.trainer import Trainer, train
from tests.conftest import TINY_WAV2VEC2, tiny_config, tiny_overrides


@pytest.fixture(scope="module")
def demo_run(demo_tree, tmp_path_factory):
    """One tiny text+audio+vision run on the demo tree with its three broken clips."""
    run_dir = tmp_path_factory.mktemp("runs") / "demo"
    result = train(tiny_config(demo_tree, train__epochs=2), run_dir=run_dir)
    return result


def test_broken_clips_are_reported_and_text_still_counts(demo_run):
    run = demo_run.run_dir
    rows = list(csv.DictReader(open(run / "media_issues.csv")))
    got = {(r["example_id"], r["modality"], r["reason"]) for r in rows}
    assert got == {
        ("train/dia0_utt0", "audio", "missing file"),
        ("train/dia0_utt0", "vision", "missing file"),
        ("train/dia0_utt1", "audio", "cannot decode audio"),
        ("train/dia0_utt1", "vision", "cannot decode video"),
        ("train/dia0_utt2", "audio", "no audio track"),
    }
    report = json.loads((run / "media_report.json").read_text())
    assert report["total"] == 5 and report["by_reason"]["audio: missing file"] == 1
    assert demo_run.media_issues == report["by_reason"]


def test_run_folder_holds_what_design_promises(demo_run):
    run = demo_run.run_dir
    for name in ("config.yaml", "metrics.jsonl", "eval_dev.json", "eval_test.json", "confusion_dev.png",
                 "predictions_dev.csv", "best/model.safetensors", "best/config.yaml", "best/labels.json",
                 "checkpoints/last/trainer_state.json"):
        assert (run / name).exists(), name
    assert any((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all(r["split"] == "dev" for r in lines)
    # the reported best epoch is the one with the highest dev metric, never chosen on test
    best = max(lines, key=lambda r: r["weighted_f1"])
    assert demo_run.best_epoch == best["epoch"]
    assert json.loads((run / "eval_dev.json").read_text())["weighted_f1"] == pytest.approx(best["weighted_f1"])
    assert json.loads((run / "eval_test.json").read_text())["n"] == 8


def _encoder_params(model):
    return {m: {k: v.detach().clone() for k, v in enc.named_parameters()} for m, enc in model.encoders.items()}


@pytest.mark.parametrize("audio", ["logmel_cnn", "hf_audio"])
def test_one_train_step_changes_every_encoder(demo_tree, tmp_path, audio):
    cfg = tiny_overrides(demo_tree, train__max_steps=1)
    if audio == "hf_audio":
        cfg["model"]["encoders"]["audio"] = dict(TINY_WAV2VEC2, freeze_feature_encoder=False)
    trainer = Trainer(load_config(None, cfg), run_dir=tmp_path / "run")
    before = _encoder_params(trainer.unwrapped)
    trainer.fit()
    after = _encoder_params(trainer.unwrapped)
    for m in ("text", "audio", "vision"):
        changed = [k for k in before[m] if not torch.equal(before[m][k], after[m][k])]
        assert changed, f"no {m} encoder weight changed"
        # the backbone itself learns, not only a projection on top of it
        assert any(k.startswith(("model.", "cnn.")) for k in changed), (m, changed[:3])


def test_frozen_encoder_does_not_change(demo_tree, tmp_path):
    cfg = tiny_overrides(demo_tree, train__max_steps=1)
    cfg["model"]["encoders"]["text"]["freeze"] = True
    trainer = Trainer(load_config(None, cfg), run_dir=tmp_path / "run")
    before = _encoder_params(trainer.unwrapped)
    trainer.fit()
    after = _encoder_params(trainer.unwrapped)
    assert all(torch.equal(before["text"][k], after["text"][k]) for k in before["text"])
    assert any(not torch.equal(before["vision"][k], after["vision"][k]) for k in before["vision"])


def _first_batch(config, model_dir=None, model=None):
    splits, label_set = load_splits(config)
    model = model or EmotionModel(config.model, len(label_set))
    processors = {m: type(e).build_processor(config.model.encoders[m], config.data, model_dir) for m, e in model.encoders.items()}
    items = [EmotionDataset(splits["dev"], processors, label_set)[i] for i in range(6)]
    return Collator(processors)(items)


@pytest.mark.parametrize("audio", ["logmel_cnn", "hf_audio"])
def test_save_then_load_gives_identical_logits(demo_tree, tmp_path, audio):
    cfg = tiny_overrides(demo_tree)
    if audio == "hf_audio":
        cfg["model"]["encoders"]["audio"] = TINY_WAV2VEC2
    config = load_config(None, cfg)
    splits, label_set = load_splits(config)
    model = EmotionModel(config.model, len(label_set)).eval()
    model.save_pretrained(tmp_path / "saved", config, label_set)
    loaded, loaded_cfg, loaded_labels = EmotionModel.from_pretrained(tmp_path / "saved")
    assert loaded_labels.names == label_set.names
    batch = _first_batch(config, model=model)
    batch2 = _first_batch(loaded_cfg, tmp_path / "saved", model=loaded)
    with torch.inference_mode():
        a = model(batch["inputs"], batch["present"]).logits
        b = loaded(batch2["inputs"], batch2["present"]).logits
    assert torch.equal(a, b)
    # self-contained: the saved text encoder points inside the folder, not at the original checkpoint
    assert loaded_cfg.model.encoders["text"].checkpoint == "encoders/text"


def test_recognizer_predicts_held_back_clip_with_any_subset(demo_run, demo_tree):
    entry = json.loads((demo_tree / "heldout" / "heldout.json").read_text())[0]
    clip = str(demo_tree / "heldout" / entry["video"])
    rec = EmotionRecognizer.from_pretrained(demo_run.run_dir)
    full = rec.predict(text=entry["text"], video=clip)
    assert full.modalities == ["text", "audio", "vision"]
    assert set(full.probs) == set(rec.labels) and sum(full.probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert full.label == max(full.probs, key=full.probs.get)
    assert rec.predict(text=entry["text"]).modalities == ["text"]
    assert rec.predict(audio=clip).modalities == ["audio"]
    with pytest.raises(ValueError, match="no usable input"):
        rec.predict()


def test_manifest_training_on_real_ravdess_clips(shared_data, tmp_path):
    cfg = tiny_overrides(None, modalities=("text", "audio"))
    cfg["data"] = {
        "source": "manifest", "label_set": "ravdess8", "max_examples": 10, "max_audio_seconds": 2.0,
        "path": str(shared_data / "ravdess_speech" / "labels.csv"),
        "columns": {"audio": "file", "text": "transcription", "label": "emotion", "speaker": "actor"},
        "split_column": "actor", "splits": {"train": ["08"], "dev": ["13"]},
    }
    result = train(load_config(None, cfg), run_dir=tmp_path / "ravdess")
    assert result.dev["n"] == 10 and result.test is None
    assert result.media_issues == {}


def test_manifest_of_face_images(shared_data):
    cfg = tiny_overrides(None, modalities=("vision",))
    cfg["data"] = {"source": "manifest", "label_set": "faces8", "path": str(shared_data / "facial_expressions" / "labels.csv"),
                   "columns": {"image": "image", "label": "emotion"}}
    cfg = load_config(None, cfg)
    splits, labels = load_splits(cfg)
    ex = splits["train"][0]
    assert len(splits["train"]) == 294 and ex.image.endswith(".jpg") and ex.label in labels


def test_missing_dev_split_and_unknown_label_are_named(demo_tree, tmp_path):
    (tmp_path / "train_sent_emo.csv").write_bytes((demo_tree / "train_sent_emo.csv").read_bytes())
    with pytest.raises(DataError, match="split 'dev' is missing or empty"):
        Trainer(tiny_config(tmp_path, modalities=("text",)), run_dir=tmp_path / "r")
    (tmp_path / "dev_sent_emo.csv").write_text(
        "Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nhi,Joey,happy,0,0\n")
    with pytest.raises(LabelError, match=r"dev_sent_emo.csv: line 2 \(split dev\): label 'happy' is not in label set meld7"):
        load_splits(tiny_config(tmp_path, modalities=("text",)))
