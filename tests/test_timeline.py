"""Timelines and streaming (issue 44): windows over whole recordings decoded as they are read, speech segments,
transcripts joined to windows, unreadable regions, and live chunks."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from mmemo.cli import main
from mmemo.config import load_config
from mmemo.data.audio_stream import AudioStream, Windower
from mmemo.data.demo import make_voice, write_clip, write_recording
from mmemo.data.examples import Example, Splits
from mmemo.data.transcript import Transcript
from mmemo.errors import DataError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from mmemo.training.trainer import Trainer
from tests.conftest import tiny_config

SR = 16000


def test_windows_lie_on_the_hop_grid_cover_the_tail_and_restart_after_a_gap():
    w = Windower(10, window=3.0, hop=1.5)
    got = []
    for i in range(0, 100, 7):  # 10 s at 10 Hz, in chunks of 0.7 s
        got += w.push(np.arange(i, min(i + 7, 100), dtype=np.float32))
    got += w.flush()
    assert [(a, b) for a, b, _ in got] == [(0, 30), (15, 45), (30, 60), (45, 75), (60, 90), (70, 100)]
    assert all(np.array_equal(s, np.arange(a, b)) for a, b, s in got)  # each window holds its own samples
    # a gap (an unreadable region from 40 to 62): the audio before it is closed by a window ending there, and
    # windows restart on the grid (75) where there is a window's worth, else one ends at the audio's end
    w = Windower(10, window=3.0, hop=1.5)
    got = w.push(np.zeros(40, np.float32), 0) + w.push(np.ones(40, np.float32), 62) + w.flush()
    assert [(a, b) for a, b, _ in got] == [(0, 30), (10, 40), (72, 102)]
    w = Windower(10, window=3.0, hop=1.5)
    got = w.push(np.zeros(40, np.float32), 0) + w.push(np.ones(60, np.float32), 62) + w.flush()
    assert [(a, b) for a, b, _ in got] == [(0, 30), (10, 40), (75, 105), (90, 120), (92, 122)]
    assert all(s.min() == s.max() for _, _, s in got)  # no window mixes audio from both sides of the gap
    short = Windower(10, window=3.0, hop=1.5)
    assert [(a, b) for a, b, _ in short.push(np.zeros(12, np.float32)) + short.flush()] == [(0, 12)]


def test_transcript_rows_join_windows_by_overlap(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("start,end,speaker,text\n0,2,ann,hello there\n1.5,4,bob,hi\n10,12,ann,bye\n")
    t = Transcript.read(path)
    assert t.join(0, 3) == ("hello there hi", "ann")  # ann talks 2 s of it, bob 1.5 s
    assert t.join(3, 6) == ("hi", "bob")
    assert t.join(6, 9) == (None, None)
    assert t.join(9.5, 12.5) == ("bye", "ann")
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"segments": [{"start": 0.0, "end": 1.0, "text": "ok"}]}))
    assert Transcript.read(js).join(0, 3) == ("ok", None)
    bad = tmp_path / "bad.csv"
    bad.write_text("start,end,text\n0,x,hello\n")
    with pytest.raises(DataError, match="bad.csv: line 2"):
        Transcript.read(bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A linear model on acoustic functionals that tells the demo's angry voice from its sad one, trained on
    3-second windows of generated recordings."""
    d = tmp_path_factory.mktemp("tl")
    examples = []
    for label, seed in (("anger", 1), ("sadness", 2), ("neutral", 3)):
        write_recording(d / f"{label}.wav", [(label, 45.0)], seed=seed)
        wav, _ = sf.read(d / f"{label}.wav", dtype="float32")
        for i in range(0, len(wav) - 3 * SR + 1, 3 * SR):
            path = d / f"{label}_{i}.wav"
            sf.write(path, wav[i:i + 3 * SR], SR)
            examples.append(Example(id=path.stem, audio=str(path), label=label))
    config = load_config(None, {
        "data": {"source": "manifest", "label_set": "meld7", "path": "unused.csv", "max_audio_seconds": 4.0},
        "model": {"modalities": ["audio"], "encoders": {"audio": {"name": "acoustic", "hidden": [], "dim": None}},
                  "fusion": {"name": "probe"}},
        "train": {"epochs": 30, "batch_size": 8, "lr": 1e-2, "progress": False, "select_on": "train", "eval_test": False,
                  "selection": "last"},
    })
    Trainer(config, run_dir=d / "run", splits=Splits({"train": examples}), label_set=get_label_set("meld7")).fit()
    return EmotionRecognizer.from_pretrained(d / "run", device="cpu"), d / "run"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """45 s: anger, then sadness from 15 s, then anger again from 30 s; with a transcript."""
    d = tmp_path_factory.mktemp("rec")
    path = write_recording(d / "call.wav", [("anger", 15.0), ("sadness", 15.0), ("anger", 15.0)], seed=7,
                           transcript=d / "call.csv")
    return path, d / "call.csv"


def test_the_timeline_of_a_recording_finds_where_the_emotion_changes(trained, recording):
    rec, _ = trained
    timeline = rec.predict_timeline(recording[0], window=3.0, hop=1.5)
    assert timeline.warnings == [] and abs(timeline.seconds - 45.0) < 0.05
    assert [r.start for r in timeline.rows[:3]] == [0.0, 1.5, 3.0] and timeline.rows[-1].end == pytest.approx(45.0, abs=0.01)
    truth = lambda t: "sadness" if 15 <= t < 30 else "anger"  # noqa: E731
    inside = [r for r in timeline.rows if truth(r.start) == truth(r.end - 1e-6)]
    assert np.mean([r.label == truth(r.start) for r in inside]) >= 0.9
    changes = timeline.changes()
    assert [label for _, label in changes] == ["anger", "sadness", "anger"]
    assert abs(changes[1][0] - 15.0) <= 2.0 and abs(changes[2][0] - 30.0) <= 2.0
    assert all(set(r.probs) == set(rec.labels) and abs(sum(r.probs.values()) - 1) < 1e-4 for r in timeline.rows)


def test_a_recording_with_more_windows_than_a_batch_gives_the_same_rows_in_order(trained, recording):
    rec, _ = trained
    small = rec.predict_timeline(recording[0], batch_size=3)
    large = rec.predict_timeline(recording[0], batch_size=64)
    assert len(small) == len(large) == 29 > 3  # 28 windows on the grid, one ending at 45 s
    assert [(r.start, r.end) for r in small] == [(r.start, r.end) for r in large]
    for a, b in zip(small, large):
        assert max(abs(a.probs[k] - b.probs[k]) for k in a.probs) < 1e-5
    # decoded block by block: blocks shorter than the recording give the same windows
    blocks = list(rec.timeline_run(recording[0], batch_size=5))
    assert [(r.start, r.label) for r in blocks] == [(r.start, r.label) for r in large]


def test_a_corrupt_region_and_an_early_end_give_the_rows_that_could_be_read_and_a_warning(trained, recording, tmp_path):
    rec, _ = trained
    wav, _ = sf.read(recording[0], dtype="float32")
    flac = tmp_path / "call.flac"
    sf.write(flac, wav, SR)
    data = bytearray(flac.read_bytes())
    corrupt = tmp_path / "corrupt.flac"
    middle = len(data) // 2
    data[middle:middle + 20000] = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    timeline = rec.predict_timeline(corrupt)
    assert any("could not be decoded" in w for w in timeline.warnings), timeline.warnings
    starts = [r.start for r in timeline.rows]
    assert starts[0] == 0.0 and timeline.rows[-1].end > 40.0  # rows before and after the damage
    assert 10 < len(starts) < 30  # the windows over the damaged region are missing
    assert all(r.label is not None for r in timeline.rows)

    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(flac.read_bytes()[: len(data) // 2])
    timeline = rec.predict_timeline(truncated)
    assert any("ends at" in w for w in timeline.warnings), timeline.warnings
    assert 10 < timeline.rows[-1].end < 30 and len(timeline) >= 8


def test_cli_timeline_writes_csv_json_and_a_plot(trained, recording, tmp_path, capsys):
    _, run = trained
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    assert main(["timeline", str(run), str(recording[0]), "--out", str(out), "--plot", str(png), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out)))
    header = next(csv.reader(open(out)))
    assert header[:3] == ["start", "end", "label"] and header[3:10] == [f"p_{c}" for c in get_label_set("meld7").names]
    assert len(rows) == 29 and rows[12]["label"] == "sadness"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "29 rows over 45.0 s" in capsys.readouterr().err
    assert main(["timeline", str(run), str(recording[0]), "--json", "--window", "4", "--hop", "2", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][1]["start"] == 2.0 and data["rows"][1]["end"] == 6.0 and data["labels"][0] == "neutral"


def test_a_transcript_gives_each_window_its_text_and_speaker(recording, tmp_path):
    config = tiny_config(None, ("text", "audio"))
    labels = get_label_set("meld7")
    EmotionModel(config.model, len(labels), seed=0).save_pretrained(tmp_path / "m", config, labels)
    rec = EmotionRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    timeline = rec.predict_timeline(recording[0], transcript=recording[1], batch_size=8)
    transcript = Transcript.read(recording[1])
    assert len(timeline) == 29
    for row in timeline.rows[:6]:
        text, speaker = transcript.join(row.start, row.end)
        assert (row.text, row.speaker) == (text, speaker) and text
        assert row.modalities == ["text", "audio"] and set(row.contributions) == {"text", "audio"}
    first = timeline.rows[0]
    alone = rec.predict(text=first.text, audio=(sf.read(recording[0], dtype="float32", frames=3 * SR)[0], SR))
    assert max(abs(alone.probs[k] - first.probs[k]) for k in alone.probs) < 1e-4


def test_voice_activity_segments_score_speech_and_skip_silence(trained, shared_data, tmp_path):
    pytest.importorskip("silero_vad")
    import torch

    from mmemo.data.media import load_audio

    rec, _ = trained
    clips = sorted((shared_data / "emodb" / "wav").glob("03a0*.wav"))[:3]
    silence = np.zeros(2 * SR, np.float32)
    parts, spans, t = [silence], [], 2.0
    for clip in clips:
        wav = load_audio(clip, SR).numpy()
        parts += [wav, silence]
        spans.append((t, t + len(wav) / SR))
        t += len(wav) / SR + 2.0
    sf.write(tmp_path / "speech.wav", np.concatenate(parts), SR)
    threads = torch.get_num_threads()
    timeline = rec.predict_timeline(tmp_path / "speech.wav", segments="vad", window=4.0)
    assert torch.get_num_threads() == threads  # importing silero-vad sets 1 thread; restored
    assert len(timeline) == len(clips)
    for row, (a, b) in zip(timeline.rows, spans):
        assert a - 0.3 <= row.start and row.end <= b + 0.3 and row.end - row.start > 0.5 * (b - a)
    fixed = rec.predict_timeline(tmp_path / "speech.wav")
    assert len(fixed) > len(timeline)


def test_streaming_gives_the_rows_of_the_file_timeline_as_chunks_arrive(trained, recording):
    rec, _ = trained
    wav, _ = sf.read(recording[0], dtype="float32")
    stream = rec.stream(sample_rate=SR)
    rows, fed = [], 0
    rng = np.random.default_rng(0)
    while fed < len(wav):
        n = int(rng.integers(200, 9000))
        got = stream.feed(wav[fed:fed + n])
        fed += n
        assert all(r.end <= fed / SR + 1e-9 for r in got)  # a row only once its window is complete
        rows += got
    rows += stream.close()
    file_rows = rec.predict_timeline(recording[0]).rows
    assert [(r.start, r.end) for r in rows] == [(r.start, r.end) for r in file_rows]
    assert all(max(abs(a.probs[k] - b.probs[k]) for k in a.probs) < 1e-5 for a, b in zip(rows, file_rows))
    assert len(stream.latencies) == len(rows) and all(0 < x < 5 for x in stream.latencies)
    # another sample rate: chunks are cut at that rate, each window resampled as any in-memory input
    stream48 = rec.stream(sample_rate=48000)
    voice = make_voice(np.random.default_rng(1), "anger", 4.0, 48000)
    got = list(stream48.predictions([voice[:70000], voice[70000:]]))
    assert [(r.start, r.end) for r in got] == [(0.0, 3.0), (1.0, 4.0)]


def test_a_video_files_audio_track_gives_its_timeline(trained, tmp_path):
    rec, _ = trained
    rng = np.random.default_rng(3)
    audio = np.concatenate([make_voice(rng, "anger", 2.0, SR) for _ in range(4)])
    write_clip(tmp_path / "v.mp4", np.zeros((40, 32, 32, 3), np.uint8), audio)
    stream = AudioStream(tmp_path / "v.mp4", SR, block_seconds=3.0)
    assert sum(len(b.samples) for b in stream) == pytest.approx(8 * SR, abs=SR // 10)
    timeline = rec.predict_timeline(tmp_path / "v.mp4")
    assert 4 <= len(timeline) <= 6 and timeline.rows[0].label == "anger"


def test_the_demo_recording_is_as_long_as_asked_and_its_transcript_follows_the_emotions(tmp_path):
    """`mmemo demo-data DIR --recording MINUTES`: what the README's timeline example runs on."""
    import csv

    import soundfile as sf

    from mmemo.data.demo import write_demo_recording

    wav, transcript = write_demo_recording(tmp_path, 1.0, segment=20.0)
    info = sf.info(str(wav))
    assert abs(info.frames / info.samplerate - 60.0) < 0.01
    rows = list(csv.DictReader(open(transcript, encoding="utf-8")))
    assert rows and all(0 <= float(r["start"]) < float(r["end"]) <= 60.0 for r in rows)
    assert {r["speaker"] for r in rows} == {"agent", "caller"}
    assert any(float(r["start"]) >= 40.0 for r in rows)  # the third 20-second segment has speech too
