"""The acoustic encoder (librosa functionals + MLP) and per-speaker normalisation, on real EmoDB and
RAVDESS files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mmemo.config import DataConfig, load_config
from mmemo.data.examples import Example, Splits
from mmemo.data.media import load_audio
from mmemo.data.readers.manifest import read_manifest
from mmemo.labels import get_label_set
from mmemo.models.encoders.audio import (
    AcousticConfig,
    AcousticEncoder,
    AcousticProcessor,
    acoustic_feature_names,
    acoustic_functionals,
)
from mmemo.models.encoders.base import Processor, fit_processors
from mmemo.training.cache import encoder_fingerprint
from mmemo.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
EMODB_COLUMNS = {"audio": "file", "label": "emotion", "speaker": "speaker"}


@pytest.fixture(scope="module")
def emodb(shared_data) -> list[Example]:
    return read_manifest(shared_data / "emodb" / "labels.csv", columns=EMODB_COLUMNS)["train"]


def _pick(examples, speaker, n):
    return [ex for ex in examples if ex.speaker == speaker][:n]


def test_functionals_are_finite_named_and_hear_pitch(emodb):
    config = AcousticConfig()
    names = acoustic_feature_names(config)
    male = acoustic_functionals(load_audio(_pick(emodb, "03", 1)[0].audio, 16000).numpy(), 16000, config)
    female = acoustic_functionals(load_audio(_pick(emodb, "16", 1)[0].audio, 16000).numpy(), 16000, config)
    assert male.shape == female.shape == (len(names),) and len(set(names)) == len(names)
    assert np.isfinite(male).all() and np.isfinite(female).all()
    pitch = names.index("pitch_st_p50")
    # speaker 03 is a man, 16 a woman: several semitones apart in median pitch
    assert female[pitch] - male[pitch] > 4, (male[pitch], female[pitch])
    assert 0.2 < male[names.index("voiced_fraction")] <= 1.0

    finer = acoustic_functionals(load_audio(_pick(emodb, "03", 1)[0].audio, 16000).numpy(), 16000,
                                 AcousticConfig(n_mels=128))
    cepstral = np.array([n.startswith(("mfcc", "d_mfcc")) for n in names])
    assert finer.shape == male.shape and not np.allclose(finer[cepstral], male[cepstral], atol=1e-3)
    np.testing.assert_array_equal(finer[~cepstral], male[~cepstral])  # only the MFCCs come from the mel bands


def test_functionals_on_48k_ravdess_with_extra_wav_chunk(shared_data):
    path = next((shared_data / "ravdess_speech" / "Actor_13").glob("*.wav"))
    processor = AcousticProcessor(AcousticConfig(), None)
    out = processor(Example(id="r", audio=str(path)))
    assert out["features"].shape == (len(acoustic_feature_names(AcousticConfig())),)
    assert torch.isfinite(out["features"]).all()


def test_speaker_norm_standardises_each_speaker_with_its_own_clips(emodb):
    examples = _pick(emodb, "03", 6) + _pick(emodb, "16", 6)
    processor = AcousticProcessor(AcousticConfig(speaker_norm=True), None)
    fit_processors({"audio": processor}, Splits({"train": examples[:8], "test": examples[8:]}))
    assert set(processor.speaker_stats) == {"03", "16"}
    for speaker in ("03", "16"):
        feats = torch.stack([processor(ex)["features"] for ex in examples if ex.speaker == speaker])
        assert feats.mean(0).abs().max() < 1e-3
        informative = feats.std(0, unbiased=False) > 0.5  # features that vary at all within the speaker
        assert informative.float().mean() > 0.9
    raw = AcousticProcessor(AcousticConfig(), None)
    assert not torch.allclose(raw(examples[0])["features"], processor(examples[0])["features"])
    stranger = _pick(emodb, "11", 1)[0]  # not fitted: the global statistics, and a note
    mean, std = processor.speaker_norm.global_stats
    torch.testing.assert_close(processor(stranger)["features"],
                               torch.from_numpy(((raw.raw_features(stranger) - mean) / std).astype(np.float32)))
    assert "speaker '11' is not enrolled" in processor.notes(stranger)[0]


def test_statistics_fitted_on_other_clips_are_another_cache_entry(emodb):
    """Refitting the speaker statistics changes every embedding, so the cache fingerprint must follow."""
    examples = _pick(emodb, "03", 6) + _pick(emodb, "16", 6)
    encoder = AcousticEncoder(AcousticConfig(speaker_norm=True, freeze=True))
    data = DataConfig()
    fitted = []
    for subset in (examples, examples[:4] + examples[6:10]):
        processor = AcousticProcessor(encoder.config, None)
        fit_processors({"audio": processor}, Splits({"train": subset}))
        fitted.append(encoder_fingerprint("audio", encoder, processor, data))
    unfitted = encoder_fingerprint("audio", encoder, AcousticProcessor(encoder.config, None), data)
    assert fitted[0]["fitted"] != fitted[1]["fitted"]
    assert unfitted["fitted"] not in (fitted[0]["fitted"], fitted[1]["fitted"])
    assert {k: v for k, v in fitted[0].items() if k != "fitted"} == {k: v for k, v in fitted[1].items() if k != "fitted"}


def test_fit_processors_hides_labels_and_skips_processors_that_learn_nothing(emodb):
    seen = []

    class Spy(Processor):
        modality = "audio"

        def fit(self, examples):
            seen.extend(examples)

    class Plain(Processor):
        modality = "text"

    examples = _pick(emodb, "03", 3)
    fit_processors({"audio": Spy(), "text": Plain()}, Splits({"train": examples[:2], "test": examples[2:]}))
    assert [ex.id for ex in seen] == [ex.id for ex in examples]
    assert all(ex.label is None for ex in seen) and all(ex.label is not None for ex in examples)


def test_acoustic_encoder_trains_in_a_tiny_run(emodb, tmp_path):
    label_set = get_label_set("emodb7")
    splits = Splits({"train": _pick(emodb, "03", 16) + _pick(emodb, "16", 16), "dev": _pick(emodb, "11", 8)})
    config = load_config(None, {
        "data": {"source": "manifest", "label_set": "emodb7", "path": "unused.csv"},
        "model": {"modalities": ["audio"], "encoders": {"audio": {"name": "acoustic", "speaker_norm": True, "hidden": [32],
                                                                   "dim": 16}},
                  "fusion": {"name": "concat", "dim": 16}},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "progress": False, "metric": "uar", "eval_test": False},
    })
    trainer = Trainer(config, run_dir=tmp_path / "run", splits=splits, label_set=label_set)
    before = {k: v.clone() for k, v in trainer.unwrapped.encoders["audio"].state_dict().items()}
    result = trainer.fit()
    after = trainer.unwrapped.encoders["audio"].state_dict()
    assert isinstance(trainer.unwrapped.encoders["audio"], AcousticEncoder)
    assert [h["epoch"] for h in result.history] == [1, 2] and np.isfinite(result.history[-1]["train_loss"])
    assert not torch.equal(before["mlp.2.weight"], after["mlp.2.weight"])  # the MLP learned
    assert not torch.equal(before["mlp.0.running_mean"], after["mlp.0.running_mean"])  # input statistics tracked
    assert result.dev["n"] == 8


def test_linear_config_makes_the_model_a_logistic_regression_on_the_functionals(emodb, tmp_path):
    """scripts/bench/configs/emodb/acoustic_linear.yaml: no encoder layers, no fusion layers, an L2 penalty, the last epoch kept."""
    label_set = get_label_set("emodb7")
    splits = Splits({"train": _pick(emodb, "03", 16) + _pick(emodb, "16", 16), "dev": _pick(emodb, "11", 8)})
    config = load_config(REPO / "scripts/bench/configs/emodb/acoustic_linear.yaml",
                         ["train.epochs=3", "train.progress=false", "train.eval_test=false"])
    trainer = Trainer(config, run_dir=tmp_path / "run", splits=splits, label_set=label_set)
    model = trainer.unwrapped
    encoder = model.encoders["audio"]
    assert encoder.dim == model.fusion.dim == len(acoustic_feature_names(encoder.config)) == 196
    assert [name for name, _ in model.named_parameters()] == ["fusion.missing.audio", "head.1.weight", "head.1.bias"]
    batch = next(iter(trainer.train_loader))
    features = batch["inputs"]["audio"]["features"]
    assert features.abs().max() < 10 and features.mean(0).abs().mean() < 1  # standardised per speaker
    model.train()
    out = model(batch["inputs"], batch["present"])
    weight, bias = model.head[-1].weight, model.head[-1].bias
    torch.testing.assert_close(out.logits, features @ weight.T + bias)  # the whole model, in training too
    before = weight.detach().clone()
    result = trainer.fit()
    assert result.best_epoch == 3 and [h["best"] for h in result.history] == [True, True, True]
    assert not torch.equal(before, trainer.unwrapped.head[-1].weight.detach())


def test_acoustic_encoder_trains_on_a_batch_of_one():
    """A train split of 33 with batches of 32 ends with a batch of one, which BatchNorm cannot normalise."""
    encoder = AcousticEncoder(AcousticConfig(hidden=[16], dim=8)).train()
    features = torch.randn(1, len(acoustic_feature_names(encoder.config)))
    out = encoder(features)
    out.pooled.sum().backward()
    assert out.pooled.shape == (1, 8) and torch.isfinite(out.pooled).all()
    assert encoder.mlp[-1].weight.grad is not None and encoder.mlp[0].weight.grad.abs().sum() > 0


def test_recognizer_with_the_acoustic_encoder_takes_in_memory_audio(emodb, tmp_path):
    from mmemo import EmotionRecognizer
    from mmemo.models.model import EmotionModel

    config = load_config(None, {"model": {"modalities": ["audio"], "encoders": {"audio": {"name": "acoustic", "hidden": [16]}},
                                          "fusion": {"name": "concat", "dim": 16}}})
    labels = get_label_set("emodb7")
    EmotionModel(config.model, len(labels)).save_pretrained(tmp_path / "model", config, labels)
    recognizer = EmotionRecognizer.from_pretrained(tmp_path / "model")
    wav = load_audio(emodb[0].audio, 16000)
    from_memory = recognizer.predict(audio=(wav.numpy(), 16000))
    from_file = recognizer.predict(audio=emodb[0].audio)
    assert from_memory.modalities == ["audio"] and from_memory.label in labels.names
    assert abs(from_memory.probs[from_memory.label] - from_file.probs[from_file.label]) < 1e-3


def test_features_of_a_replaced_file_are_recomputed(emodb, tmp_path):
    """The processor keeps each file's features; a new file at the same path must not get the old ones."""
    import os
    import shutil

    processor = AcousticProcessor(AcousticConfig(), None)
    path = tmp_path / "clip.wav"
    shutil.copy(emodb[0].audio, path)
    example = Example(id="x", audio=str(path))
    first = processor(example)["features"]
    assert torch.equal(processor(example)["features"], first)
    shutil.copy(emodb[1].audio, path)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    assert not torch.allclose(processor(example)["features"], first)
