"""Nothing lost, nothing run: every bad input a user (or an attacker) can hand mmemo, through the API and the CLI.

Each case builds its input and asserts the outcome: a typed exception naming the file, row, field or key
(API), the same text as one ``mmemo: error:`` line (CLI), or the input dropped with a warning that says why.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmemo.cli import main
from mmemo.config import load_config
from mmemo.data.demo import make_frames, make_voice, write_clip
from mmemo.data.examples import Example, Splits
from mmemo.data.loading import load_splits
from mmemo.data.media import read_image
from mmemo.data.readers.manifest import read_manifest_file
from mmemo.data.tables import read_table
from mmemo.errors import CheckpointError, ConfigError, DataError, InputError
from mmemo.inference import EmotionRecognizer
from mmemo.labels import get_label_set
from mmemo.models.model import EmotionModel
from mmemo.training.cache import example_key
from mmemo.training.trainer import train
from tests.conftest import tiny_config, tiny_overrides

SR = 16000
TEXT = "Oh my god, you did not!"


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmemo: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    config = tiny_config(None)
    labels = get_label_set("meld7")
    torch.manual_seed(0)
    return EmotionModel(config.model, len(labels)).eval().save_pretrained(tmp_path_factory.mktemp("m") / "model",
                                                                           config, labels)


@pytest.fixture(scope="module")
def rec(saved) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(saved, device="cpu")


# -------------------------------------------------------------------------------------------------
# Media: bad, odd and huge inputs to predict, each dropped with its reason (or used, with a warning)
# -------------------------------------------------------------------------------------------------


def _media_cases(d: Path) -> dict[str, tuple[dict, str]]:
    """name -> (predict keywords, the reason the input is dropped, as a regex)."""
    rng = np.random.default_rng(0)
    frames, voice = make_frames(rng, "joy", 12, 48), make_voice(rng, "joy", 1.5, SR)
    write_clip(d / "clip.mp4", frames, voice)
    data = (d / "clip.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    write_clip(d / "no_audio.mp4", frames, None)
    write_clip(d / "no_frames.mp4", None, voice)
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    (d / "folder.wav").mkdir()
    return {
        "corrupt clip": ({"video": str(d / "corrupt.mp4")}, r"corrupt.mp4: cannot decode video"),
        "truncated clip": ({"video": str(d / "truncated.mp4")}, r"truncated.mp4: (cannot decode|no video frames)"),
        "audio-less clip": ({"audio": str(d / "no_audio.mp4")}, r"no_audio.mp4: no audio track"),
        "frame-less clip": ({"video": str(d / "no_frames.mp4")}, r"vision dropped: \S*no_frames.mp4: no video track"),
        "silent audio": ({"audio": str(d / "silent.wav")}, r"silent.wav: silent audio"),
        "empty audio": ({"audio": str(d / "empty.wav")}, r"empty.wav: (zero-length audio|cannot decode audio)"),
        "NaN audio": ({"audio": (np.full(SR, np.nan, np.float32), SR)}, r"cannot decode audio \(non-finite samples\)"),
        "directory as a path": ({"audio": str(d / "folder.wav")}, r"folder.wav: not a file"),
        "URL": ({"video": "https://example.com/clip.mp4"},
                r"https://example.com/clip.mp4: URLs are not read \(download the file first\)"),
        "URL without a file extension": ({"audio": "s3://bucket/calls/0001"},
                                         r"s3://bucket/calls/0001: URLs are not read \(download the file first\)"),
        "text of lone surrogates": ({"text": "caf\udce9"}, r"text: not valid Unicode .*text must be a str of valid Unicode"),
        "empty text": ({"text": "   "}, r"text: text: empty text"),
    }


CASES = ["corrupt clip", "truncated clip", "audio-less clip", "frame-less clip", "silent audio", "empty audio", "NaN audio",
         "directory as a path", "URL", "URL without a file extension", "text of lone surrogates", "empty text"]


@pytest.mark.parametrize("case", CASES)
def test_unusable_input_is_dropped_with_its_reason_through_api_and_cli(rec, saved, tmp_path, capsys, case):
    inputs, reason = _media_cases(tmp_path)[case]
    if case == "frame-less clip":  # the clip's audio track is still used
        pred = rec.predict(**inputs)
        assert pred.modalities == ["audio"] and re.search(reason, " | ".join(pred.warnings))
        code, out, _ = _cli(capsys, "predict", saved, "--video", inputs["video"])
        assert code == 0 and re.search("warning: " + reason, out)
        return
    with pytest.raises(InputError, match="no usable input: .*" + reason):
        rec.predict(**inputs)
    if "text" not in inputs:  # beside a usable text, the bad input is a warning and the text predicts alone
        pred = rec.predict(text=TEXT, **inputs)
        assert pred.modalities == ["text"] and re.search(reason, " | ".join(pred.warnings))
    (field, value), = inputs.items()
    if isinstance(value, str):
        code, _, err = _cli(capsys, "predict", saved, f"--{field}", value)
        assert code == 2 and re.search(reason, _one_error_line(err))


def test_two_hour_recording_and_8000_pixel_image_are_read_within_limits(rec, tmp_path):
    with sf.SoundFile(tmp_path / "call.flac", "w", 8000, 1, subtype="PCM_16") as f:
        f.write(make_voice(np.random.default_rng(1), "anger", 30.0, 8000).astype(np.float32))
        silence = np.zeros(8000 * 600, np.float32)
        for _ in range(12):  # 2 hours in all
            f.write(silence)
    pred = rec.predict(audio=str(tmp_path / "call.flac"))
    assert pred.modalities == ["audio"]
    assert any(re.search(r"call.flac is 7230.0 s long; only its first 3 s are used", w) for w in pred.warnings)

    big = np.zeros((8000, 8000, 3), np.uint8)
    big[2000:6000, 2000:6000] = 200
    Image.fromarray(big).save(tmp_path / "big.png")
    assert rec.predict(image=str(tmp_path / "big.png")).modalities == ["vision"]


def test_sixteen_bit_greyscale_images_are_scaled_not_saturated(rec, tmp_path):
    grey16 = np.full((40, 50), 32896, np.uint16)  # mid-grey: 128 * 257
    grey16[:, :10] = 65535
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode.startswith("I")  # PIL keeps the 16 bits
    frames = read_image(str(tmp_path / "grey16.png"))
    assert frames.dtype == torch.uint8 and int(frames[0, 0, 0, 30]) == 128 and int(frames[0, 0, 0, 0]) == 255
    grey8 = (grey16 // 257).astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    for sixteen in (str(tmp_path / "grey16.png"), grey16):  # a file, and the array in memory
        assert rec.predict(image=sixteen).probs == pytest.approx(rec.predict(image=str(tmp_path / "grey8.png")).probs, abs=1e-6)


# -------------------------------------------------------------------------------------------------
# Tables: no row lost, no text re-encoded in silence
# -------------------------------------------------------------------------------------------------


def _table_cases(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a manifest, the error it gives as a regex)."""
    (d / "quote.csv").write_text('id,text\n1,"Hello there\n2,Bye\n')
    (d / "fields.csv").write_text("id,text\n1,Hello\n2,Bye,extra\n")
    (d / "mixed.csv").write_bytes("id,text\n1,Café naïve\n2,déjà vu\n".encode() + b"3,na\xefve\n")
    (d / "header.csv").write_text("id,text,label\n")
    (d / "dupes.csv").write_text("id,text\na,Hello\nb,Hi\na,Bye\n")
    (d / "surrogate.jsonl").write_text('{"id": "1", "text": "caf\\udce9"}\n')
    return {
        "unterminated quote": (d / "quote.csv", r"quote.csv: line 2: malformed CSV"),
        "wrong number of fields": (d / "fields.csv", r"fields.csv: line 3: 3 fields where the header has 2"),
        "mixed encodings": (d / "mixed.csv", r"mixed.csv: line 4: byte 0xef at offset \d+ .*mixes encodings"),
        "header only": (d / "header.csv", r"header.csv: no rows, only a header"),
        "duplicate ids": (d / "dupes.csv", r"dupes.csv: line 4: duplicate id 'a' \(first on line 2\)"),
        "lone surrogate in JSONL": (d / "surrogate.jsonl", r"surrogate.jsonl: line 1: field 'text': text is not valid Unicode"),
    }


@pytest.mark.parametrize("case", ["unterminated quote", "wrong number of fields", "mixed encodings", "header only",
                                  "duplicate ids", "lone surrogate in JSONL"])
def test_a_bad_table_is_an_error_naming_its_line_never_a_lost_row(rec, saved, tmp_path, capsys, case):
    manifest, error = _table_cases(tmp_path)[case]
    with pytest.raises(DataError, match=error):
        rec.predict_batch(str(manifest), progress=False)
    code, out, err = _cli(capsys, "predict", saved, "--manifest", manifest)
    assert code == 2 and out == "" and re.search(error, _one_error_line(err))


def test_a_file_wholly_in_cp1252_is_read_as_such_and_said_so(tmp_path, caplog):
    (tmp_path / "legacy.csv").write_bytes("id,text\n1,Café naïve\n2,“quoted” – dash\n".encode("cp1252"))
    with caplog.at_level(logging.INFO, logger="mmemo.data.tables"):
        examples = [ex for _, ex in read_manifest_file(tmp_path / "legacy.csv", require_label=False)]
    assert [ex.text for ex in examples] == ["Café naïve", "“quoted” – dash"]
    assert "read it as cp1252" in caplog.text
    # a UTF-8 file keeps every accent exactly
    (tmp_path / "utf8.csv").write_text("id,text\n1,Café naïve\n")
    assert read_table(tmp_path / "utf8.csv").rows == [(2, {"id": "1", "text": "Café naïve"})]


def test_a_training_csv_with_an_open_quote_stops_training_naming_the_line(demo_tree, tmp_path, capsys):
    root = shutil.copytree(demo_tree, tmp_path / "meld", ignore=shutil.ignore_patterns("*.mp4"))
    lines = (root / "train_sent_emo.csv").read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",", ',"', 1)  # an opening quote that is never closed
    (root / "train_sent_emo.csv").write_text("".join(lines))
    config = tiny_config(root, ("text",))
    with pytest.raises(DataError, match=r"train_sent_emo.csv: line 4: malformed CSV|train_sent_emo.csv: line 4: \d+ fields"):
        load_splits(config)


def test_empty_training_utterances_are_counted_in_the_media_report(demo_tree, tmp_path):
    root = shutil.copytree(demo_tree, tmp_path / "meld", ignore=shutil.ignore_patterns("*.mp4"))
    import csv

    rows = list(csv.reader(open(root / "train_sent_emo.csv", newline="")))
    column = rows[0].index("Utterance")
    rows[2][column] = rows[5][column] = " "
    with open(root / "train_sent_emo.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    result = train(tiny_config(root, ("text",), train__eval_test=False), run_dir=tmp_path / "run")
    assert result.media_issues == {"text: empty text": 2}


def test_config_errors_name_the_file_and_the_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.learning_rate: unknown key; allowed: "):
        load_config(tmp_path / "c.yaml")
    code, _, err = _cli(capsys, "train", tmp_path / "c.yaml")
    assert code == 2 and "c.yaml: train.learning_rate: unknown key" in _one_error_line(err)


# -------------------------------------------------------------------------------------------------
# Saved models and checkpoints: damaged files refused by name; nothing is ever unpickled
# -------------------------------------------------------------------------------------------------


def _damaged_model_cases(folder: Path, d: Path) -> dict[str, tuple[Path, str]]:
    cases = {}

    def copy(name: str) -> Path:
        return shutil.copytree(folder, d / name)

    m = copy("truncated")
    (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:200])
    cases["truncated weights"] = (m, r"model.safetensors: not a readable safetensors file .*damaged")
    m = copy("labels")
    (m / "labels.json").write_text(json.dumps({"label_set": "custom", "labels": ["a", "b", "c"]}))
    cases["wrong number of labels"] = (m, r"model.safetensors: head.1.weight has shape \[7, 32\], the config builds "
                                          r"\[3, 32\]; labels.json lists 3 labels")
    m = copy("malformed")
    (m / "labels.json").write_text('{"labels": ["a", ')
    cases["malformed labels.json"] = (m, r"labels.json: not valid JSON")
    m = copy("config")
    (m / "config.yaml").write_text("model: [unclosed\n")
    cases["broken config.yaml"] = (m, r"config.yaml: not valid YAML")
    return cases


@pytest.mark.parametrize("case", ["truncated weights", "wrong number of labels", "malformed labels.json", "broken config.yaml"])
def test_a_damaged_saved_model_is_refused_naming_the_file(saved, tmp_path, capsys, case):
    folder, error = _damaged_model_cases(saved, tmp_path)[case]
    with pytest.raises((CheckpointError, ConfigError), match=error):
        EmotionRecognizer.from_pretrained(folder)
    code, _, err = _cli(capsys, "predict", folder, "--text", TEXT)
    assert code == 2 and re.search(error, _one_error_line(err))


class _SideEffect:
    """Unpickling this writes ``marker``: the code-execution a hostile pickle in a run folder would get."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def run(demo_tree, tmp_path) -> Path:
    cfg = tiny_overrides(demo_tree, ("text", "audio"), train__max_steps=3, train__checkpoint_every_steps=2,
                         train__eval_test=False, data__max_examples=8)
    train(load_config(None, cfg), run_dir=tmp_path / "run")
    return tmp_path / "run"


def _plant(folder: Path, marker: Path, names=None) -> None:
    """Pickles with a side effect: under ``names`` beside the real files, or in place of every file."""
    payload = pickle.dumps(_SideEffect(marker))
    for path in [folder / n for n in names] if names else [p for p in folder.rglob("*") if p.is_file()]:
        if path.suffix in (".bin", ".pt"):
            torch.save({"state": _SideEffect(marker)}, path)
        else:
            path.write_bytes(payload)


def test_pickles_planted_beside_a_checkpoint_and_a_saved_model_are_never_unpickled(run, capsys):
    marker = run.parent / "code-ran"
    accelerate_names = ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "scaler.pt",
                        "pytorch_model.bin"]
    _plant(run / "checkpoints" / "last", marker, accelerate_names)
    _plant(run / "best", marker, ["pytorch_model.bin", "model.bin", "model.pt", "training_args.bin"])
    assert _cli(capsys, "train", "--resume", run)[0] == 0
    assert _cli(capsys, "evaluate", run)[0] == 0
    assert _cli(capsys, "predict", run, "--text", TEXT)[0] == 0
    assert not marker.exists()


def test_pickles_in_place_of_every_checkpoint_and_model_file_are_refused_by_name(run, capsys):
    marker = run.parent / "code-ran"
    last, best = run / "checkpoints" / "last", run / "best"
    _plant(last, marker)
    _plant(best, marker)
    code, _, err = _cli(capsys, "train", "--resume", run)
    assert code == 2 and re.search(rf"{re.escape(str(last))}/\S+: damaged", _one_error_line(err))
    code, _, err = _cli(capsys, "evaluate", run)
    assert code == 2 and re.search(r"best/config.yaml: not a text file", _one_error_line(err))
    code, _, err = _cli(capsys, "predict", run, "--text", TEXT)
    assert code == 2 and "best/config.yaml" in _one_error_line(err)
    # files in Accelerate's old pickled format alone: refused, never read
    for p in last.iterdir():
        p.unlink()
    _plant(last, marker, ["random_states_0.pkl", "optimizer.bin", "model.safetensors"])
    code, _, err = _cli(capsys, "train", "--resume", run)
    assert code == 2 and "a checkpoint in the old pickled format" in _one_error_line(err)
    assert not marker.exists()


# -------------------------------------------------------------------------------------------------
# The embedding cache: in-memory media keyed by their content
# -------------------------------------------------------------------------------------------------


def _in_memory_examples(n: int = 12) -> list[Example]:
    rng = np.random.default_rng(3)
    labels = get_label_set("meld7").names
    out = []
    for i in range(n):
        frames = rng.integers(1, 256, (2, 24, 24, 3), dtype=np.uint8)  # no zero byte: str() of them all looks alike
        if i % 3 == 0:
            frames[0, 0, 0, 0] = 0  # a zero byte: os.stat of it raised "embedded null character"
        image = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
        audio = (make_voice(rng, "joy", 0.5, SR), SR)
        out.append(Example(id=f"m{i}", label=labels[i % len(labels)], text=f"utterance {i}", audio=audio,
                           video=frames if i % 2 else None, image=None if i % 2 else image))
    return out


def test_in_memory_media_are_keyed_by_content_and_each_trains_on_its_own_embedding(tmp_path, caplog):
    examples = _in_memory_examples()
    keys = [example_key(ex) for ex in examples]
    assert len(set(keys)) == len(examples)
    copy = Example(**{**examples[1].__dict__, "video": examples[1].video.copy(), "id": "other"})
    assert example_key(copy) == keys[1]  # the same content under another id and object: the same entry
    copy.video[1, 5, 5, 1] ^= 1  # one bit of one pixel
    assert example_key(copy) != keys[1]

    cfg = tiny_overrides(None, ("audio", "vision"), train__epochs=1, train__eval_test=False,
                         data__cache_dir=str(tmp_path / "cache"))
    for m in ("audio", "vision"):
        cfg["model"]["encoders"][m]["freeze"] = True
    config = load_config(None, cfg)
    with caplog.at_level(logging.INFO, logger="mmemo.training.cache"):
        result = train(config, run_dir=tmp_path / "run", splits=Splits({"train": examples, "dev": examples[:4]}),
                       label_set=get_label_set("meld7"))
    assert result.media_issues == {}
    computed = [int(m) for m in re.findall(r"(\d+) computed", caplog.text)]
    assert computed == [len(examples), len(examples)]  # one entry per example, for each frozen encoder
