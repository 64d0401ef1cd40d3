"""The Python API and the saved-model format: EmotionRecognizer, predict, predict_batch, `mmemo predict`."""

import csv
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmemo.cli import main
from mmemo.data.demo import make_frames, make_voice, write_clip
from mmemo.data.examples import Example
from mmemo.errors import CheckpointError
from mmemo.inference import EmotionRecognizer, InputError
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from mmemo.registry import FUSIONS
from tests.conftest import tiny_config

SR = 16000
TEXT = "Oh my god, you did not!"


def write_video(path, frames, audio, vcodec, acodec, fps=10, sample_rate=SR):
    """A video file in any container PyAV can write (mkv, webm, avi...)."""
    import av

    with av.open(str(path), "w") as container:
        vstream = container.add_stream(vcodec, rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        astream = container.add_stream(acodec, rate=sample_rate)
        astream.layout = "mono"
        for f in frames:
            container.mux(vstream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(vstream.encode())
        # the encoder's sample format and frame size, via FFmpeg's resampler
        resampler = av.AudioResampler(format=astream.codec_context.format.name, layout="mono", rate=sample_rate,
                                      frame_size=astream.codec_context.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        for part in resampler.resample(frame) + resampler.resample(None):
            container.mux(astream.encode(part))
        container.mux(astream.encode())


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    frames = make_frames(rng, "joy", 20, 64)
    voice = make_voice(rng, "joy", 2.0, SR)
    write_clip(d / "clip.mp4", frames, voice)
    write_video(d / "clip.mkv", frames, voice, "h264", "aac")
    write_video(d / "clip.webm", frames, voice, "libvpx", "libopus", sample_rate=48000)
    write_video(d / "clip.avi", frames, voice, "mpeg4", "libmp3lame")
    sf.write(d / "voice.wav", voice, SR, subtype="FLOAT")
    sf.write(d / "voice.flac", voice, SR)
    sf.write(d / "voice.mp3", voice, SR)
    Image.fromarray(frames[10]).save(d / "face.jpg")
    Image.fromarray(frames[10]).save(d / "face.png")
    paths = {p.name: str(p) for p in d.iterdir()}
    return {"dir": d, "frames": frames, "voice": voice, **paths}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random text+audio+vision model, saved; returns (folder, model, config, label set)."""
    config = tiny_config(None)
    label_set = get_label_set("meld7")
    torch.manual_seed(0)
    model = EmotionModel(config.model, len(label_set)).eval()
    folder = model.save_pretrained(tmp_path_factory.mktemp("models") / "saved", config, label_set)
    return folder, model, config, label_set


@pytest.fixture(scope="module")
def rec(saved):
    return EmotionRecognizer.from_pretrained(saved[0], device="cpu")


# -------------------------------------------------------------------------------------------------
# The saved-model format
# -------------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_probabilities_without_network_or_repo(saved, media, tmp_path, monkeypatch):
    folder, model, config, label_set = saved
    in_memory = EmotionRecognizer(model, config, label_set, device="cpu")
    before = in_memory.predict(text=TEXT, video=media["clip.mp4"])

    def no_network(*args, **kwargs):
        raise AssertionError("loading a saved model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "model")
    monkeypatch.chdir(tmp_path)  # no repo configs, no training data in reach
    loaded = EmotionRecognizer.from_pretrained(moved, device="cpu")
    after = loaded.predict(text=TEXT, video=media["clip.mp4"])
    assert after.probs == before.probs and after.label == before.label
    assert after.contributions == before.contributions
    # saving the loaded model again gives the same model
    again = EmotionRecognizer.from_pretrained(loaded.save_pretrained(tmp_path / "resaved"), device="cpu")
    assert again.predict(text=TEXT, video=media["clip.mp4"]).probs == before.probs

    files = {p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()}
    assert {"config.yaml", "model.safetensors", "labels.json", "encoders/text/tokenizer_config.json",
            "encoders/text/config.json"} <= files
    assert json.loads((moved / "labels.json").read_text())["labels"] == list(label_set.names)
    enc = loaded.config.model.encoders
    assert enc["text"].checkpoint == "encoders/text" and enc["text"].pretrained is False
    assert enc["vision"].pretrained is False and enc["vision"].checkpoint_path is None and enc["vision"].image_size == 32


def test_backbone_weights_file_is_not_needed_after_saving(tmp_path):
    """A timm backbone initialised from a local weights file: the saved model must not read it again."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "backbone.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), str(weights))
    config = tiny_config(None, modalities=("vision",), model__encoders__vision__checkpoint_path=str(weights))
    label_set = get_label_set("meld7")
    model = EmotionModel(config.model, len(label_set)).eval()
    rec = EmotionRecognizer(model, config, label_set, device="cpu")
    frames = np.random.default_rng(1).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    before = rec.predict(video=frames)
    rec.save_pretrained(tmp_path / "saved")
    weights.unlink()
    assert EmotionRecognizer.from_pretrained(tmp_path / "saved", device="cpu").predict(video=frames).probs == before.probs


class _Payload:
    """A pickle that creates a file when it is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_checkpoint_is_refused_unless_opted_in(saved, media, tmp_path):
    folder, model, _, _ = saved
    expected = EmotionRecognizer.from_pretrained(folder, device="cpu").predict(text=TEXT).probs

    pickled = shutil.copytree(folder, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: refusing to load a pickled checkpoint"):
        EmotionRecognizer.from_pretrained(pickled)
    opted_in = EmotionRecognizer.from_pretrained(pickled, device="cpu", allow_pickle=True)
    assert opted_in.predict(text=TEXT).probs == expected

    hostile = shutil.copytree(folder, tmp_path / "hostile")
    (hostile / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"weights": _Payload(marker)}, hostile / "model.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        EmotionRecognizer.from_pretrained(hostile)
    with pytest.raises(Exception, match="(?i)weights.only"):  # even opted in: tensors only, no code
        EmotionRecognizer.from_pretrained(hostile, allow_pickle=True)
    assert not marker.exists()


def test_hub_id_offline_is_a_clear_error_and_push_uploads_the_saved_folder(rec, fake_hub):
    with pytest.raises(FileNotFoundError, match=r"someone/no-such-model: not a local folder, and the Hugging Face Hub"):
        EmotionRecognizer.from_pretrained("someone/no-such-model")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        EmotionRecognizer.from_pretrained("./no/such/folder")

    assert rec.push_to_hub("me/model").endswith("/commit/1")
    assert fake_hub["repo"] == "me/model"
    assert {"config.yaml", "model.safetensors", "labels.json", "encoders"} <= set(fake_hub["files"])


# -------------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------------


def _pil_frames(m):
    return [Image.fromarray(f) for f in m["frames"][:5]]


INPUT_KINDS = {
    "text": (lambda m: {"text": TEXT}, ["text"]),
    "wav": (lambda m: {"audio": m["voice.wav"]}, ["audio"]),
    "flac": (lambda m: {"audio": m["voice.flac"]}, ["audio"]),
    "mp3": (lambda m: {"audio": m["voice.mp3"]}, ["audio"]),
    "mp4 as audio": (lambda m: {"audio": m["clip.mp4"]}, ["audio"]),
    "mp4": (lambda m: {"video": m["clip.mp4"]}, ["audio", "vision"]),
    "mkv": (lambda m: {"video": m["clip.mkv"]}, ["audio", "vision"]),
    "webm": (lambda m: {"video": m["clip.webm"]}, ["audio", "vision"]),
    "avi": (lambda m: {"video": m["clip.avi"]}, ["audio", "vision"]),
    "jpg": (lambda m: {"image": m["face.jpg"]}, ["vision"]),
    "png": (lambda m: {"image": m["face.png"]}, ["vision"]),
    "audio array": (lambda m: {"audio": (m["voice"], SR)}, ["audio"]),
    "audio tensor [channels, samples] at 44.1 kHz": (lambda m: {"audio": (torch.randn(2, 44100) * 0.1, 44100)}, ["audio"]),
    "audio int16 [samples, channels]": (lambda m: {"audio": ((m["voice"][:, None] * 20000).astype(np.int16), SR)}, ["audio"]),
    "video array [T, H, W, C]": (lambda m: {"video": m["frames"]}, ["vision"]),
    "video tensor [T, C, H, W] float": (lambda m: {"video": torch.from_numpy(m["frames"]).permute(0, 3, 1, 2) / 255.0}, ["vision"]),
    "video as PIL images": (lambda m: {"video": _pil_frames(m)}, ["vision"]),
    "PIL image": (lambda m: {"image": Image.fromarray(m["frames"][3])}, ["vision"]),
    "greyscale PIL image": (lambda m: {"image": Image.fromarray(m["frames"][3]).convert("L")}, ["vision"]),
    "image array": (lambda m: {"image": m["frames"][3]}, ["vision"]),
    "image tensor [C, H, W]": (lambda m: {"image": torch.rand(3, 50, 70)}, ["vision"]),
    "everything": (lambda m: {"text": TEXT, "audio": m["voice.wav"], "video": m["clip.webm"]}, ["text", "audio", "vision"]),
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_each_input_kind(rec, media, kind):
    make, modalities = INPUT_KINDS[kind]
    pred = rec.predict(**make(media))
    assert pred.modalities == modalities
    assert pred.warnings == []
    assert set(pred.probs) == set(rec.labels) and sum(pred.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred.label == max(pred.probs, key=pred.probs.get)


def test_dialogue_context_is_used_as_in_training(rec, tmp_path):
    context = ["Where were you?", ("Ross", "We were on a break!"), ("Monica", "Not again.")]
    ignored = rec.predict(text=TEXT, context=context, speaker="Rachel")
    assert ignored.warnings == ["context ignored: this model's text encoder was trained without dialogue context "
                                "(context_turns: 0)"]
    assert ignored.probs == rec.predict(text=TEXT).probs

    config = tiny_config(None, modalities=("text",), model__encoders__text__context_turns=2)
    label_set = get_label_set("meld7")
    with_context = EmotionRecognizer(EmotionModel(config.model, len(label_set)).eval(), config, label_set, device="cpu")
    pred = with_context.predict(text=TEXT, context=context, speaker="Rachel")
    assert pred.warnings == [] and pred.probs != with_context.predict(text=TEXT, speaker="Rachel").probs
    # the last two turns, as training's attach_context gives them
    assert pred.probs == with_context.predict(text=TEXT, context=context[1:], speaker="Rachel").probs
    assert pred.probs != with_context.predict(text=TEXT, context=context[2:], speaker="Rachel").probs


def test_in_memory_inputs_match_their_files(rec, media):
    import av

    assert rec.predict(audio=(media["voice"], SR)).probs == pytest.approx(rec.predict(audio=media["voice.wav"]).probs, abs=1e-6)
    assert rec.predict(image=Image.open(media["face.png"])).probs == rec.predict(image=media["face.png"]).probs
    with av.open(media["clip.mp4"]) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    vision = rec.processors["vision"]
    from_array = vision(Example("a", video=decoded))["frames"].float()
    from_file = vision(Example("f", video=media["clip.mp4"]))["frames"].float()
    assert from_array.shape == from_file.shape == (3, 3, 32, 32)
    assert (from_array - from_file).abs().mean() < 2.0  # same frames, resized the same way


def test_video_audio_track_is_the_audio_unless_audio_is_given(rec, media):
    other = (np.random.default_rng(3).normal(0, 0.2, SR).astype(np.float32), SR)
    own = rec.predict(video=media["clip.mp4"])
    given = rec.predict(video=media["clip.mp4"], audio=other)
    assert own.modalities == given.modalities == ["audio", "vision"]
    assert given.probs == pytest.approx(rec.predict(video=media["frames"], audio=other).probs, abs=1e-3)
    assert given.probs != own.probs
    assert rec.predict(video=media["frames"]).modalities == ["vision"]  # frames in memory have no sound


def test_contributions_are_the_effect_of_removing_each_modality(rec, media):
    inputs = {"text": TEXT, "audio": media["voice.wav"], "video": media["frames"]}
    full = rec.predict(**inputs)
    assert list(full.contributions) == ["text", "audio", "vision"]
    for modality, field in (("text", "text"), ("audio", "audio"), ("vision", "video")):
        without = rec.predict(**{k: v for k, v in inputs.items() if k != field})
        assert full.contributions[modality] == pytest.approx(full.probs[full.label] - without.probs[full.label], abs=1e-6)
    assert any(abs(c) > 1e-4 for c in full.contributions.values())
    assert rec.predict(text=TEXT).contributions == {}  # one modality: nothing to remove it against


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_contributions_with_every_fusion(media, fusion):
    config = tiny_config(None, model__fusion={"name": fusion, "dim": 16})
    label_set = get_label_set("meld7")
    torch.manual_seed(0)
    rec = EmotionRecognizer(EmotionModel(config.model, len(label_set)).eval(), config, label_set, device="cpu")
    inputs = {"text": TEXT, "audio": media["voice.wav"], "video": media["frames"]}
    full = rec.predict(**inputs)
    without_audio = rec.predict(text=TEXT, video=media["frames"])
    assert full.contributions["audio"] == pytest.approx(full.probs[full.label] - without_audio.probs[full.label], abs=1e-5)
    assert all(np.isfinite(list(full.contributions.values())))


def _bad_inputs(tmp):
    (tmp / "notes.txt").write_text("not media")
    (tmp / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    sf.write(tmp / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    sf.write(tmp / "no_samples.wav", np.zeros(0, dtype=np.float32), SR)
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    return {
        "unsupported format": ({"audio": str(tmp / "notes.txt")}, r"audio: \S*notes.txt: unsupported format \(.txt; audio reads"),
        "corrupt file": ({"video": str(tmp / "bad.mp4")}, r"audio: \S*bad.mp4: cannot decode audio.*vision: \S*bad.mp4: cannot decode video"),
        "missing file": ({"image": str(tmp / "gone.jpg")}, r"vision: \S*gone.jpg: missing file"),
        "empty string": ({"text": "  "}, r"text: text: empty text"),
        "silent audio": ({"audio": str(tmp / "silent.wav")}, r"audio: \S*silent.wav: silent audio"),
        "zero-length audio file": ({"audio": str(tmp / "no_samples.wav")}, r"audio: \S*no_samples.wav: (zero-length audio|cannot decode audio)"),
        "zero-length audio array": ({"audio": (np.zeros(0, np.float32), SR)}, r"audio: audio ndarray float32\[0\] at 16000 Hz: zero-length audio"),
        "silent audio array": ({"audio": (np.zeros(SR, np.float32), SR)}, r"audio: audio ndarray float32\[16000\] at 16000 Hz: silent audio"),
        "unreadable image": ({"image": str(tmp / "broken.png")}, r"vision: \S*broken.png: cannot decode image"),
        "image array of the wrong shape": ({"image": np.zeros((5, 6, 7))}, r"vision: ndarray float64\[5, 6, 7\]: unsupported frame layout"),
    }


@pytest.mark.parametrize("case", ["unsupported format", "corrupt file", "missing file", "empty string", "silent audio",
                                  "zero-length audio file", "zero-length audio array", "silent audio array",
                                  "unreadable image", "image array of the wrong shape"])
def test_bad_input_is_named_and_dropped_or_an_error(rec, tmp_path, case):
    inputs, reason = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match="no usable input: " + reason):
        rec.predict(**inputs)
    if "text" not in inputs:  # with a good text alongside, the text alone predicts and the bad input is a warning
        pred = rec.predict(text=TEXT, **inputs)
        assert pred.modalities == ["text"]
        assert pred.probs == rec.predict(text=TEXT).probs
        assert all(" dropped: " in w for w in pred.warnings)
        import re

        assert re.search(reason, "; ".join(w.replace(" dropped: ", ": ", 1) for w in pred.warnings))


def test_values_of_the_wrong_type_raise_at_once(rec, media):
    with pytest.raises(TypeError, match=r"audio: .*an array needs its sample rate: audio=\(array, sample_rate\)"):
        rec.predict(audio=media["voice"])
    with pytest.raises(TypeError, match="text: expected a string, got int"):
        rec.predict(text=3)
    with pytest.raises(TypeError, match="image: expected a path, a PIL image or an array"):
        rec.predict(image={"x": 1})
    with pytest.raises(TypeError, match=r"predict_batch: input 1: unknown key\(s\) clip"):
        rec.predict_batch([{"text": "a"}, {"clip": "x.mp4"}], progress=False)


def test_an_unexpected_decoder_failure_is_named_not_raised(rec, media, monkeypatch):
    class Exploding:
        def __call__(self, example):
            raise RuntimeError("boom\n  deep inside a decoder")

    monkeypatch.setitem(rec.processors, "vision", Exploding())
    pred = rec.predict(text=TEXT, image=media["face.jpg"])
    assert pred.modalities == ["text"]
    assert pred.warnings == [f"vision dropped: {media['face.jpg']}: cannot read (RuntimeError: boom)"]


def test_long_inputs_are_cut_by_the_training_rule_with_a_warning(rec, media, tmp_path):
    rng = np.random.default_rng(5)
    long_voice = make_voice(rng, "anger", 5.0, SR)  # the tiny model reads data.max_audio_seconds = 3
    sf.write(tmp_path / "long.wav", long_voice, SR, subtype="FLOAT")
    from_file = rec.predict(audio=str(tmp_path / "long.wav"))
    assert from_file.warnings == [f"audio: {tmp_path / 'long.wav'} is 5.0 s long; only its first 3 s are used "
                                  "(data.max_audio_seconds)"]
    first_3s = rec.predict(audio=(long_voice[: 3 * SR], SR))
    assert first_3s.warnings == [] and from_file.probs == pytest.approx(first_3s.probs, abs=1e-6)
    assert "is 5.0 s long" in rec.predict(audio=(long_voice, SR)).warnings[0]

    long_text = rec.predict(text="really " * 100)
    assert long_text.warnings and "100 tokens long; only its first 30 are used" in long_text.warnings[0]

    write_clip(tmp_path / "long.mp4", make_frames(rng, "anger", 80, 32), long_voice[: 8 * SR] if len(long_voice) > 8 * SR
               else np.tile(long_voice, 2)[: 8 * SR])
    pred = rec.predict(video=str(tmp_path / "long.mp4"))
    assert pred.modalities == ["audio", "vision"] and "only its first 3 s are used" in pred.warnings[0]
    frames = rec.processors["vision"](Example("x", video=str(tmp_path / "long.mp4")))["frames"]
    assert frames.shape == (3, 3, 32, 32)  # num_frames across the whole clip, whatever its length


# -------------------------------------------------------------------------------------------------
# Batches
# -------------------------------------------------------------------------------------------------


def _batch_inputs(m, tmp):
    (tmp / "bad.jpg").write_bytes(b"not a jpeg")
    return [
        {"id": "t", "text": TEXT},
        {"id": "v", "video": m["clip.mp4"], "text": "Wow."},
        {"id": "i", "image": m["face.jpg"]},
        {"id": "broken", "image": str(tmp / "bad.jpg")},
        {"id": "a", "audio": (m["voice"], SR), "text": "No way."},
        {"id": "w", "video": m["clip.webm"]},
    ]


@pytest.mark.parametrize("num_workers,num_threads", [(0, 1), (0, 3), (1, None)])
def test_predict_batch_keeps_input_order_and_matches_predict(rec, media, tmp_path, num_workers, num_threads):
    inputs = _batch_inputs(media, tmp_path)
    preds = rec.predict_batch(inputs, batch_size=4, num_workers=num_workers, num_threads=num_threads, progress=False)
    assert [p.id for p in preds] == ["t", "v", "i", "broken", "a", "w"]
    broken = preds[3]
    assert broken.label is None and broken.probs == {} and "bad.jpg: cannot decode image" in broken.error
    for inp, pred in zip(inputs, preds):
        if inp["id"] == "broken":
            continue
        one = rec.predict(**{k: v for k, v in inp.items() if k != "id"})
        assert pred.label == one.label and pred.modalities == one.modalities
        # padding a batch moves the log-mel CNN's last frames a little (its BatchNorm shift fills the padding)
        assert pred.probs == pytest.approx(one.probs, abs=1e-4)
        assert pred.contributions == pytest.approx(one.contributions, abs=1e-4)


@pytest.mark.parametrize("num_threads,concurrent", [(1, 1), (3, 3)])
def test_predict_batch_decodes_inputs_at_the_same_time_in_threads(rec, media, tmp_path, monkeypatch, num_threads, concurrent):
    prepare, lock = rec.preparer, threading.Lock()
    running, most = [0], [0]

    def slow_prepare(index, example, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)  # a decode long enough for the others to start meanwhile
        try:
            return prepare(index, example, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(rec, "preparer", slow_prepare)
    inputs = [{"id": str(i), "text": f"{TEXT} {i}"} for i in range(7)]
    preds = rec.predict_batch(inputs, batch_size=3, num_threads=num_threads, progress=False)
    assert [p.id for p in preds] == [str(i) for i in range(7)]
    assert most[0] == concurrent
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        rec.predict_batch(inputs, num_threads=0, progress=False)


def test_predict_batch_over_a_manifest(rec, media, tmp_path):
    for name in ("clip.mp4", "face.jpg", "voice.wav"):
        shutil.copy(media[name], tmp_path / name)
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "utterance_text", "video", "image", "audio"],
                                 ["r1", TEXT, "clip.mp4", "", ""],
                                 ["r2", "", "", "face.jpg", ""],
                                 ["r3", "Hello there.", "", "", "voice.wav"],
                                 ["r4", "", "", "missing.png", ""]])
    preds = rec.predict_batch(tmp_path / "m.csv", batch_size=3, columns={"text": "utterance_text"}, progress=False)
    assert [p.id for p in preds] == ["r1", "r2", "r3", "r4"]
    assert [p.modalities for p in preds] == [["text", "audio", "vision"], ["vision"], ["text", "audio"], []]
    assert preds[0].probs == pytest.approx(rec.predict(text=TEXT, video=media["clip.mp4"]).probs, abs=1e-5)
    assert "missing.png: missing file" in preds[3].error


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------


def test_cli_predict_prints_a_table_and_json(saved, media, capsys):
    folder = str(saved[0])
    assert main(["predict", folder, "--text", TEXT, "--video", media["clip.mp4"]]) == 0
    table = capsys.readouterr().out
    assert table.startswith("prediction: ") and "(from text, audio, vision)" in table
    assert all(label in table for label in get_label_set("meld7").names)
    assert "contribution to p(" in table and "#" in table

    assert main(["predict", folder, "--text", TEXT, "--video", media["clip.mp4"], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modalities"] == ["text", "audio", "vision"] and len(out["probs"]) == 7
    assert set(out["contributions"]) == {"text", "audio", "vision"} and out["label"] in out["probs"]


def test_cli_predict_manifest_writes_one_row_per_input(saved, media, tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"id": "a", "text": TEXT, "video": media["clip.mp4"]},
                                          {"id": "b", "image": media["face.png"]},
                                          {"id": "c", "text": ""}]) + "\n")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(saved[0]), "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--batch-size", "2"]) == 0
    assert "3 predictions written" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert float(rows[0]["p_joy"]) > 0 and rows[0]["modalities"] == "text+audio+vision" and rows[0]["contribution_text"]
    assert rows[1]["modalities"] == "vision" and rows[1]["contribution_text"] == ""
    assert rows[2]["label"] == "" and rows[2]["error"].startswith("no usable input: nothing given")  # an empty cell is no value
    assert sum(float(rows[0][f"p_{c}"]) for c in get_label_set("meld7").names) == pytest.approx(1.0, abs=1e-4)


def test_cli_bad_input_is_one_readable_line(saved, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["predict", str(saved[0]), "--audio", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmemo: error: no usable input: audio: ") and "notes.txt: unsupported format" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_predictions_match_cpu(saved, media):
    cpu = EmotionRecognizer.from_pretrained(saved[0], device="cpu")
    gpu = EmotionRecognizer.from_pretrained(saved[0], device="cuda")
    inputs = {"text": TEXT, "video": media["clip.mp4"]}
    assert gpu.predict(**inputs).probs == pytest.approx(cpu.predict(**inputs).probs, abs=1e-4)
    batch = gpu.predict_batch([inputs, {"image": media["face.jpg"]}], progress=False)
    assert [p.modalities for p in batch] == [["text", "audio", "vision"], ["vision"]]
