"""The opensmile encoder (openSMILE eGeMAPS / ComParE as an audio encoder): feature counts, paths and arrays,
the kept features and the embedding cache, LLD sequences, media failures, per-speaker normalisation."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmemo.config import DataConfig, load_config
from mmemo.data.dataset import Collator, EmotionDataset, MediaReport
from mmemo.data.examples import Example, Splits
from mmemo.data.media import MediaError, load_audio
from mmemo.data.readers.manifest import read_manifest
from mmemo.labels import get_label_set
from mmemo.models.encoders import opensmile as osm
from mmemo.models.encoders.base import fit_processors
from mmemo.models.encoders.opensmile import (
    KEPT,
    OpenSmileConfig,
    OpenSmileEncoder,
    OpenSmileProcessor,
    opensmile_feature_names,
)
from mmemo.training.cache import EmbeddingCache
from mmemo.training.trainer import Trainer

pytest.importorskip("opensmile")  # part of the dev extra; skipped only where it cannot be installed

REPO = Path(__file__).resolve().parents[1]
EMODB_COLUMNS = {"audio": "file", "label": "emotion", "speaker": "speaker"}
COUNTS = {("ComParE_2016", "functionals"): 6373, ("ComParE_2016", "lld"): 65,
          ("eGeMAPSv02", "functionals"): 88, ("eGeMAPSv02", "lld"): 25}


def tone(path: Path, seconds: float, rate: int = 16000, f0: float = 180.0, amplitude: float = 0.3) -> Path:
    """A voiced-like test signal: a harmonic tone with a slow pitch glide and a loudness envelope."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))) / rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)
    sf.write(path, (amplitude * wav / np.abs(wav).max()).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def emodb(shared_data) -> list[Example]:
    return read_manifest(shared_data / "emodb" / "labels.csv", columns=EMODB_COLUMNS)["train"]


def _pick(examples, speaker, n):
    return [ex for ex in examples if ex.speaker == speaker][:n]


@pytest.mark.parametrize("feature_set,level", list(COUNTS))
def test_feature_count_of_each_set_on_a_generated_tone(tmp_path, feature_set, level):
    path = tone(tmp_path / "tone.wav", 1.5)
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set=feature_set, level=level), None)
    feats = processor(Example(id="t", audio=str(path)))["features"]
    n = COUNTS[feature_set, level]
    assert len(processor.feature_names) == len(opensmile_feature_names(feature_set, level)) == n
    assert feats.shape == ((n,) if level == "functionals" else (146, n)) and torch.isfinite(feats).all()
    if (feature_set, level) == ("eGeMAPSv02", "functionals"):
        # the tone's pitch glides around 180 Hz: eGeMAPS reports F0 in semitones from 27.5 Hz (180 Hz: 32.5)
        f0 = feats[processor.feature_names.index("F0semitoneFrom27.5Hz_sma3nz_amean")].item()
        assert 30.5 < f0 < 34.5, f0


def test_real_emodb_clip_from_a_path_and_from_arrays(emodb):
    """The path and the decoded array give the same values; the array at the file's own rate (22,050 Hz),
    resampled by torchaudio instead of FFmpeg, gives nearly the same."""
    path = _pick(emodb, "03", 1)[0].audio
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="ComParE_2016"), None)
    from_path = processor(Example(id="p", audio=path))["features"]
    wav = load_audio(path, 16000)
    from_array = processor(Example(id="a", audio=(wav.numpy(), 16000)))["features"]
    assert from_path.shape == (6373,) and torch.isfinite(from_path).all()
    torch.testing.assert_close(from_array, from_path, rtol=0, atol=0)
    native, rate = sf.read(path, dtype="float32")
    assert rate == 22050
    resampled = processor(Example(id="n", audio=(native, rate)))["features"]
    assert not torch.equal(resampled, from_path)
    assert np.corrcoef(np.log1p(resampled.abs().numpy()), np.log1p(from_path.abs().numpy()))[0, 1] > 0.99


def test_features_are_kept_per_file_version_and_threads_give_the_same_values(emodb, monkeypatch):
    examples = _pick(emodb, "11", 6)
    KEPT.clear()
    calls = []
    extract = osm.opensmile_features
    monkeypatch.setattr(osm, "opensmile_features", lambda *a, **k: calls.append(1) or extract(*a, **k))
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02"), None)
    processor.extract(examples, workers=2, progress=False)
    assert len(calls) == 6 and len(KEPT) == 6
    threaded = [processor(ex)["features"] for ex in examples]
    another = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02"), None)  # a new run in the same process
    assert [torch.equal(another(ex)["features"], f) for ex, f in zip(examples, threaded)] == [True] * 6
    assert len(calls) == 6  # nothing extracted again
    KEPT.clear()
    sequential = [another(ex)["features"] for ex in examples]
    assert len(calls) == 12 and all(torch.equal(a, b) for a, b in zip(sequential, threaded))
    other_level = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02", level="lld"), None)
    assert other_level(examples[0])["features"].shape[1] == 25  # the settings are part of the key


def test_features_of_a_replaced_file_are_extracted_again(tmp_path):
    import os

    path = tone(tmp_path / "clip.wav", 1.0, f0=150.0)
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02"), None)
    first = processor(Example(id="x", audio=str(path)))["features"]
    tone(path, 1.0, f0=300.0)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    assert not torch.allclose(processor(Example(id="x", audio=str(path)))["features"], first)


def test_lld_sequence_follows_the_clip_length_and_padding_changes_nothing(tmp_path):
    config = OpenSmileConfig(feature_set="eGeMAPSv02", level="lld", hidden=[16], dim=8)
    processor = OpenSmileProcessor(config, None)
    short = processor(Example(id="s", audio=str(tone(tmp_path / "s.wav", 1.0))))
    long = processor(Example(id="l", audio=str(tone(tmp_path / "l.wav", 2.5))))
    n_short, n_long = short["features"].shape[0], long["features"].shape[0]
    assert n_long - n_short == 150  # one frame per 10 ms
    assert 90 <= n_short <= 100
    batch = processor.collate([short, long])
    assert batch["features"].shape == (2, n_long, 25) and batch["mask"].sum(1).tolist() == [n_short, n_long]
    encoder = OpenSmileEncoder(config).eval()
    emb = encoder(**batch)
    alone = encoder(**processor.collate([short]))
    assert emb.seq.shape == (2, n_long, 8) and emb.mask.tolist() == batch["mask"].tolist()
    torch.testing.assert_close(emb.pooled[0], alone.pooled[0])  # the padding frames do not enter the mean
    torch.testing.assert_close(emb.seq[0, :n_short], alone.seq[0])
    assert (emb.seq[0, n_short:] == 0).all()
    encoder.train()
    encoder.mlp[0].reset_running_stats()
    encoder.mlp[0].momentum = 1.0
    encoder(**batch)  # in training, the BatchNorm's statistics come from the real frames alone
    real = torch.cat([short["features"], long["features"]])
    torch.testing.assert_close(encoder.mlp[0].running_mean, real.mean(0))


def test_full_scale_samples_do_not_wrap_around():
    """openSMILE scales floats to 16-bit PCM; a sample at +1.0 must clip to 32767, not wrap to -32768."""
    square = np.sign(np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02"), None)
    full = processor(Example(id="f", audio=(square, 16000)))["features"]
    below = processor(Example(id="b", audio=(np.where(square > 0, 32767 / 32768, square).astype(np.float32), 16000)))["features"]
    torch.testing.assert_close(full, below)


@pytest.mark.filterwarnings("ignore:Segment too short")  # pytest resets the module's own filter
def test_short_silent_and_corrupt_clips_go_to_the_media_report(tmp_path):
    good = tone(tmp_path / "good.wav", 1.0)
    short = tone(tmp_path / "short.wav", 0.03)  # 30 ms: openSMILE's first frame spans 60 ms
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="ComParE_2016"), None)
    with pytest.raises(MediaError, match="too short for openSMILE") as err:
        processor(Example(id="short", audio=str(short)))
    assert err.value.path == str(short) and "30 ms" in err.value.detail
    with pytest.raises(MediaError, match="too short for openSMILE"):
        processor(Example(id="array", audio=(np.full(400, 0.1, np.float32), 16000)))
    examples = [Example(id=p.stem, audio=str(p)) for p in (good, short, silent, corrupt)]
    dataset = EmotionDataset(examples, {"audio": processor})
    batch = Collator({"audio": processor})([dataset[i] for i in range(4)])
    assert batch["present"][:, 0].tolist() == [True, False, False, False]
    assert batch["inputs"]["audio"]["features"].shape == (1, 6373)
    report = MediaReport()
    report.add(batch["issues"])
    assert report.counts() == {"audio: too short for openSMILE": 1, "audio: silent audio": 1, "audio: cannot decode audio": 1}


def test_speaker_norm_is_fitted_on_each_speakers_clips_and_applied(emodb):
    examples = _pick(emodb, "03", 6) + _pick(emodb, "16", 6)
    processor = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02", speaker_norm=True), None)
    assert processor.fitted_state() is None
    fit_processors({"audio": processor}, Splits({"train": examples[:8], "test": examples[8:]}))
    assert set(processor.speaker_norm.stats) == {"03", "16"} and processor.fitted_state() is not None
    for speaker in ("03", "16"):
        feats = torch.stack([processor(ex)["features"] for ex in examples if ex.speaker == speaker])
        assert feats.mean(0).abs().max() < 1e-4
        varies = feats.std(0, unbiased=False) > 0
        torch.testing.assert_close(feats.std(0, unbiased=False)[varies], torch.ones(int(varies.sum())), atol=1e-4, rtol=0)
    raw = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02"), None)
    # the speakers' pitch (03 a man, 16 a woman) is gone after normalisation, not before
    f0 = raw.feature_names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    assert raw(examples[8])["features"][f0] - raw(examples[0])["features"][f0] > 4
    # a speaker it was not fitted on: the global statistics (over every fitted clip), with a note saying so
    stranger = _pick(emodb, "11", 1)[0]
    mean, std = processor.speaker_norm.global_stats
    expected = (raw.raw_features(stranger) - mean) / std
    torch.testing.assert_close(processor(stranger)["features"], torch.from_numpy(expected.astype(np.float32)))
    assert "speaker '11' is not enrolled" in processor.notes(stranger)[0]

    lld = OpenSmileProcessor(OpenSmileConfig(feature_set="eGeMAPSv02", level="lld", speaker_norm=True), None)
    fit_processors({"audio": lld}, Splits({"train": examples}))
    frames = torch.cat([lld(ex)["features"] for ex in examples if ex.speaker == "16"])
    assert frames.mean(0).abs().max() < 1e-3  # over every frame of the speaker's clips


def test_bare_features_are_frozen_and_the_embedding_cache_returns_them(emodb, tmp_path):
    examples = _pick(emodb, "12", 5)
    config = OpenSmileConfig(feature_set="eGeMAPSv02", speaker_norm=True, hidden=[], dim=None, batch_norm=False)
    encoder = OpenSmileEncoder(config)
    assert encoder.is_frozen and encoder.dim == 88 and not list(encoder.parameters())
    assert not OpenSmileEncoder(OpenSmileConfig(feature_set="eGeMAPSv02")).is_frozen  # an MLP to train
    processor = OpenSmileProcessor(config, None)
    fit_processors({"audio": processor}, Splits({"train": examples}))
    cache = EmbeddingCache.for_encoder(tmp_path, "audio", encoder, processor, DataConfig())
    assert cache.add(examples, encoder, processor, progress=False) == 5
    cached = cache.processor("audio")
    for ex in examples:
        direct = encoder(**processor.collate([processor(ex)]))
        stored = cached.collate([cached(ex)])
        torch.testing.assert_close(stored.pooled, direct.pooled, rtol=0, atol=0)
        torch.testing.assert_close(stored.seq, direct.seq, rtol=0, atol=0)
    assert EmbeddingCache.for_encoder(tmp_path, "audio", encoder, processor, DataConfig()).add(examples, encoder, processor) == 0


def test_linear_config_trains_a_logistic_regression_through_the_cache(emodb, tmp_path):
    """scripts/bench/configs/emodb/opensmile_egemaps_linear.yaml: the features, a linear head, nothing else;
    a corrupt clip in the training split is counted, not fatal."""
    label_set = get_label_set("emodb7")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(512))
    bad = Example(id="bad", audio=str(corrupt), speaker="03", label="anger")
    splits = Splits({"train": _pick(emodb, "03", 16) + _pick(emodb, "16", 16) + [bad], "dev": _pick(emodb, "11", 8)})
    config = load_config(REPO / "scripts/bench/configs/emodb/opensmile_egemaps_linear.yaml",
                         ["train.epochs=3", "train.progress=false", "train.eval_test=false", f"data.cache_dir={tmp_path / 'cache'}"])
    trainer = Trainer(config, run_dir=tmp_path / "run", splits=splits, label_set=label_set)
    model = trainer.unwrapped
    assert [name for name, _ in model.named_parameters()] == ["fusion.missing.audio", "head.1.weight", "head.1.bias"]
    assert model.fusion.dim == 88 and list((tmp_path / "cache").glob("audio-opensmile-*/*.safetensors"))
    before = model.head[-1].weight.detach().clone()
    result = trainer.fit()
    assert result.best_epoch == 3 and not torch.equal(before, trainer.unwrapped.head[-1].weight.detach())
    assert '"audio: cannot decode audio": 1' in (tmp_path / "run" / "media_report.json").read_text()


def test_missing_package_names_the_extra_and_bad_settings_name_the_choices(monkeypatch):
    import sys

    with pytest.raises(ValueError, match="eGeMAPSv02"):
        osm.smile("eGeMAPS_v9", "functionals")
    osm.smile.cache_clear()
    monkeypatch.setitem(sys.modules, "opensmile", None)
    try:
        with pytest.raises(ImportError, match=r"pip install mmemo\[opensmile\]"):
            OpenSmileEncoder(OpenSmileConfig(feature_set="IS09"))
    finally:
        osm.smile.cache_clear()
