"""Enrolment: per-speaker statistics saved with the model, new speakers enrolled from unlabelled clips, and the
fallback to global statistics for a speaker the model does not know (issue 44)."""

import json
import shutil

import numpy as np
import pytest
import torch

from mmemo.cli import main
from mmemo.config import load_config
from mmemo.data.examples import Example, Splits
from mmemo.data.loading import apply_labels
from mmemo.data.media import load_audio
from mmemo.data.readers.manifest import read_manifest
from mmemo.errors import CheckpointError, ConfigError, InputError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import get_label_set
from mmemo.models.encoders.base import fit_processors
from mmemo.models.fitted import FITTED_NAME, read_fitted
from mmemo.models.model import EmotionModel
from mmemo.training.trainer import Trainer

COLUMNS = {"audio": "file", "label": "emotion", "speaker": "speaker"}
LINEAR = {"name": "acoustic", "speaker_norm": True, "hidden": [], "dim": None, "batch_norm": False}


@pytest.fixture(scope="module")
def emodb(shared_data):
    label_set = get_label_set("emodb7")
    examples = read_manifest(shared_data / "emodb" / "labels.csv", columns=COLUMNS)["train"]
    return apply_labels(examples, label_set, {}, "train")


def _pick(examples, speaker, n, skip=0):
    return [ex for ex in examples if ex.speaker == speaker][skip:skip + n]


@pytest.fixture(scope="module")
def trained(emodb, tmp_path_factory):
    """A linear model on per-speaker normalised functionals, trained on speakers 03 and 16 (dev 11)."""
    run = tmp_path_factory.mktemp("spk") / "run"
    config = load_config(None, {
        "data": {"source": "manifest", "label_set": "emodb7", "path": "unused.csv"},
        "model": {"modalities": ["audio"], "encoders": {"audio": dict(LINEAR)}, "fusion": {"name": "probe"}},
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-2, "progress": False, "metric": "uar", "eval_test": False},
    })
    splits = Splits({"train": _pick(emodb, "03", 10) + _pick(emodb, "16", 10), "dev": _pick(emodb, "11", 4)})
    Trainer(config, run_dir=run, splits=splits, label_set=get_label_set("emodb7")).fit()
    return run


def test_a_model_trained_with_speaker_norm_predicts_after_loading_for_known_unknown_and_no_speaker(trained, emodb, caplog):
    assert (trained / "best" / FITTED_NAME).is_file()
    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    assert rec.speakers == ["03", "11", "16"] and rec.enrolled_speakers == []
    clip = _pick(emodb, "12", 1)[0].audio
    known = rec.predict(audio=clip, speaker="03")
    assert known.warnings == [] and known.label in rec.labels
    unknown = rec.predict(audio=clip, speaker="99")
    assert len(unknown.warnings) == 1 and "speaker '99' is not enrolled" in unknown.warnings[0]
    assert "global statistics" in unknown.warnings[0]
    assert any("global statistics" in r.message for r in caplog.records)
    nobody = rec.predict(audio=clip)
    assert "no speaker given" in nobody.warnings[0]
    assert nobody.probs == unknown.probs  # both standardised with the same global statistics
    assert not np.allclose(list(known.probs.values()), list(unknown.probs.values()))  # 03's own statistics differ


def test_the_global_statistics_are_the_mean_of_every_clip_and_the_spread_within_a_speaker(trained, emodb):
    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    norm = rec.processors["audio"].speaker_norm
    groups = [_pick(emodb, "03", 10), _pick(emodb, "16", 10), _pick(emodb, "11", 4)]
    raws = [np.stack([rec.processors["audio"].raw_features(ex) for ex in clips]) for clips in groups]
    np.testing.assert_allclose(norm.global_stats[0], np.concatenate(raws).mean(0), rtol=1e-4, atol=1e-4)
    within = np.sqrt(np.mean([r.var(0) for r in raws], axis=0)) + 1e-3
    np.testing.assert_allclose(norm.global_stats[1], within, rtol=1e-4, atol=1e-4)
    # narrower than the spread over every clip, which adds the differences between the speakers
    assert np.median(norm.global_stats[1] / (np.concatenate(raws).std(0) + 1e-3)) < 1


def test_enrolment_round_trips_through_an_enrolment_file_and_the_model_folder(trained, emodb, tmp_path):
    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    enrol, held = _pick(emodb, "12", 5), _pick(emodb, "12", 3, skip=5)
    result = rec.enroll("12", [ex.audio for ex in enrol])
    assert (result.speaker, result.used, result.skipped) == ("12", 5, [])
    assert rec.enrolled_speakers == ["12"] and "12" in rec.speakers
    before = [rec.predict(audio=ex.audio, speaker="12") for ex in held]
    assert all(p.warnings == [] for p in before)
    assert before[0].probs != rec.predict(audio=held[0].audio).probs  # its own statistics, not the global ones

    file = rec.save_enrollments(tmp_path / "enrolled")
    assert file.name == "enrollments.safetensors"
    states = read_fitted(file)
    assert states["audio"].meta["speakers"] == ["12"] and "global_mean" not in states["audio"].tensors
    fresh = EmotionRecognizer.from_pretrained(trained, device="cpu")
    assert fresh.load_enrollments(tmp_path / "enrolled") == ["12"]
    assert [fresh.predict(audio=ex.audio, speaker="12").probs for ex in held] == [p.probs for p in before]

    rec.save_pretrained(tmp_path / "with12")
    again = EmotionRecognizer.from_pretrained(tmp_path / "with12", device="cpu")
    assert again.speakers == ["03", "11", "12", "16"] and again.enrolled_speakers == ["12"]
    assert [again.predict(audio=ex.audio, speaker="12").probs for ex in held] == [p.probs for p in before]
    assert again.predict(audio=held[0].audio, speaker="03").probs == rec.predict(audio=held[0].audio, speaker="03").probs


def test_enrolment_takes_arrays_and_video_tracks_and_reports_unusable_clips(trained, emodb, tmp_path):
    from mmemo.data.demo import write_clip

    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    clips = _pick(emodb, "13", 4)
    wav = load_audio(clips[0].audio, 16000).numpy()
    write_clip(tmp_path / "c.mp4", None, load_audio(clips[1].audio, 16000).numpy())
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    result = rec.enroll("13", [(wav, 16000), str(tmp_path / "c.mp4"), clips[2].audio, str(tmp_path / "broken.wav")])
    assert result.used == 3 and len(result.skipped) == 1 and "broken.wav" in result.skipped[0]
    with pytest.raises(InputError, match="no usable clip"):
        rec.enroll("14", [str(tmp_path / "broken.wav")])
    assert "14" not in rec.speakers
    with pytest.raises(TypeError, match="clip 0"):
        rec.enroll("15", [3])


def test_a_model_saved_before_fitted_state_existed_loads_and_can_enrol(trained, emodb, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained / "best", old)
    (old / FITTED_NAME).unlink()
    rec = EmotionRecognizer.from_pretrained(old, device="cpu")
    assert rec.speakers == []
    clip = _pick(emodb, "12", 6)
    with pytest.raises(InputError, match="enrol the speaker first"):
        rec.predict(audio=clip[5].audio, speaker="12")
    rec.enroll("12", [ex.audio for ex in clip[:5]])
    assert rec.predict(audio=clip[5].audio, speaker="12").warnings == []


def test_damaged_or_foreign_state_files_are_named_errors_and_nothing_is_unpickled(trained, emodb, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained / "best", bad)
    (bad / FITTED_NAME).write_bytes((bad / FITTED_NAME).read_bytes()[:100])
    with pytest.raises(CheckpointError, match="processors.safetensors"):
        EmotionRecognizer.from_pretrained(bad, device="cpu")
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"audio.mean": torch.zeros(2)}, pickled)
    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    with pytest.raises(CheckpointError, match="pickled.safetensors"):
        rec.load_enrollments(pickled)
    # statistics of another width (say another feature configuration) do not fit
    rec.enroll("12", [ex.audio for ex in _pick(emodb, "12", 3)])
    file = rec.save_enrollments(tmp_path / "e.safetensors")
    states = read_fitted(file)
    from mmemo.models.fitted import write_fitted

    states["audio"].tensors = {k: v[:, :10].contiguous() for k, v in states["audio"].tensors.items()}
    write_fitted(states, tmp_path / "narrow.safetensors", content="enrollments")
    with pytest.raises(CheckpointError, match="do not fit this model"):
        rec.load_enrollments(tmp_path / "narrow.safetensors")


def test_a_model_without_per_speaker_statistics_has_nothing_to_enrol(tmp_path):
    config = load_config(None, {"model": {"modalities": ["audio"], "encoders": {"audio": {"name": "acoustic", "hidden": [8]}},
                                          "fusion": {"name": "concat", "dim": 8}}})
    labels = get_label_set("emodb7")
    EmotionModel(config.model, len(labels)).save_pretrained(tmp_path / "m", config, labels)
    assert not (tmp_path / "m" / FITTED_NAME).exists()
    rec = EmotionRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    with pytest.raises(ConfigError, match="speaker_norm"):
        rec.enroll("a", [(np.zeros(16000, np.float32), 16000)])


def test_any_processor_with_a_fit_step_enrols_the_same_way_opensmile(emodb, tmp_path):
    pytest.importorskip("opensmile")
    config = load_config(None, {"model": {"modalities": ["audio"], "encoders": {"audio": {
        "name": "opensmile", "feature_set": "eGeMAPSv02", "speaker_norm": True, "hidden": [], "dim": None,
        "batch_norm": False}}, "fusion": {"name": "probe"}}})
    labels = get_label_set("emodb7")
    model = EmotionModel(config.model, len(labels), seed=0)
    processors = {"audio": type(model.encoders["audio"]).build_processor(config.model.encoders["audio"], config.data)}
    fit_processors(processors, Splits({"train": _pick(emodb, "03", 6) + _pick(emodb, "16", 6)}))
    model.save_pretrained(tmp_path / "m", config, labels, processors)
    rec = EmotionRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    assert rec.speakers == ["03", "16"]
    held = _pick(emodb, "11", 1, skip=5)[0].audio
    assert "global statistics" in rec.predict(audio=held, speaker="11").warnings[0]
    rec.enroll("11", [ex.audio for ex in _pick(emodb, "11", 5)])
    enrolled = rec.predict(audio=held, speaker="11")
    assert enrolled.warnings == []
    rec.save_enrollments(tmp_path / "e")
    fresh = EmotionRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    fresh.load_enrollments(tmp_path / "e")
    assert fresh.predict(audio=held, speaker="11").probs == enrolled.probs
    acoustic = EmotionRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    acoustic.processors["audio"].speaker_norm.encoder = "acoustic"
    with pytest.raises(CheckpointError, match="not speaker statistics of acoustic"):
        acoustic.load_enrollments(tmp_path / "e")


def test_cli_enroll_into_the_model_folder_or_a_file_and_predict_with_a_speaker(trained, emodb, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(trained / "best", model)
    clips = [ex.audio for ex in _pick(emodb, "12", 5)]
    held = _pick(emodb, "12", 1, skip=6)[0].audio
    assert main(["enroll", str(model), "--speaker", "12", *clips]) == 0
    assert "enrolled '12' from 5 clip(s)" in capsys.readouterr().out
    assert "12" in EmotionRecognizer.from_pretrained(model, device="cpu").speakers
    assert main(["predict", str(model), "--audio", held, "--speaker", "12", "--json"]) == 0
    in_folder = json.loads(capsys.readouterr().out)
    assert in_folder["warnings"] == []

    separate = tmp_path / "alice.safetensors"
    assert main(["enroll", str(trained), *clips, "--speaker", "alice", "--out", str(separate)]) == 0
    capsys.readouterr()
    assert "alice" not in EmotionRecognizer.from_pretrained(trained, device="cpu").speakers  # the folder is untouched
    assert main(["predict", str(trained), "--audio", held, "--speaker", "alice", "--enrollments", str(separate), "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["warnings"] == [] and from_file["probs"] == in_folder["probs"]
    assert main(["predict", str(trained), "--audio", held, "--speaker", "alice", "--json"]) == 0
    assert "not enrolled" in json.loads(capsys.readouterr().out)["warnings"][0]


def test_cli_predict_manifest_reads_a_speaker_column(trained, emodb, tmp_path, capsys):
    import csv

    rows = [("a", _pick(emodb, "03", 1, skip=12)[0].audio, "03"), ("b", _pick(emodb, "12", 1)[0].audio, "12"),
            ("c", _pick(emodb, "16", 1, skip=12)[0].audio, "")]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("id", "audio", "who"), *rows])
    out = tmp_path / "preds.csv"
    assert main(["predict", str(trained), "--manifest", str(manifest), "--column", "speaker=who", "--out", str(out)]) == 0
    got = {r["id"]: r for r in csv.DictReader(open(out))}
    assert got["a"]["warnings"] == "" and got["a"]["label"]
    assert "speaker '12' is not enrolled" in got["b"]["warnings"] and got["b"]["label"]
    assert "no speaker given" in got["c"]["warnings"]
    rec = EmotionRecognizer.from_pretrained(trained, device="cpu")
    assert float(got["a"]["p_anger"]) == pytest.approx(rec.predict(audio=rows[0][1], speaker="03").probs["anger"], abs=1e-6)


def test_unknown_speakers_in_training_data_fall_back_instead_of_failing(emodb):
    from mmemo.models.encoders.audio import AcousticConfig, AcousticProcessor

    processor = AcousticProcessor(AcousticConfig(speaker_norm=True), None)
    fit_processors({"audio": processor}, Splits({"train": _pick(emodb, "03", 4)}))
    stray = Example(id="x", audio=_pick(emodb, "16", 1)[0].audio, speaker=None)
    assert torch.isfinite(processor(stray)["features"]).all()
    assert processor.notes(stray) and not processor.notes(_pick(emodb, "03", 1)[0])


def test_a_few_clips_spread_is_shrunk_towards_that_of_the_training_speakers(emodb):
    from mmemo.models.encoders.audio import AcousticConfig, AcousticProcessor

    processor = AcousticProcessor(AcousticConfig(speaker_norm=True), None)
    fit_processors({"audio": processor}, Splits({"train": _pick(emodb, "03", 8) + _pick(emodb, "16", 8)}))
    norm = processor.speaker_norm
    within = np.mean([(norm.stats[s][1] - norm.eps) ** 2 for s in ("03", "16")], axis=0)
    clips = _pick(emodb, "12", 5)
    processor.enroll("12", clips)
    raw = np.stack([processor.raw_features(ex) for ex in clips])
    mean, std = norm.stats["12"]
    np.testing.assert_allclose(mean, raw.mean(0), rtol=1e-5, atol=1e-5)
    expected = np.sqrt((5 * raw.var(0) + 10 * within) / 15) + norm.eps
    np.testing.assert_allclose(std, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(std, raw.std(0) + norm.eps, rtol=1e-2)  # not the 5 clips' own spread
    processor.enroll("12", _pick(emodb, "12", 30))  # re-enrolling replaces; the prior still comes from training speakers
    assert norm.enrolled == {"12"} and len(norm.stats) == 3
