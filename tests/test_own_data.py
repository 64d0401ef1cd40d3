"""Own data the expected way: docs/own-data.md run as written, a video column feeding the audio, a modality
without examples named, and data.split (random, stratified, speaker- or dialogue-disjoint, reused)."""

import csv
import logging
import re
import runpy
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mmemo.cli import main
from mmemo.config import load_config
from mmemo.data.demo import EMOTIONS
from mmemo.data.examples import Example
from mmemo.data.loading import load_splits
from mmemo.data.splits import SplitConfig, split_examples
from mmemo.errors import ConfigError, DataError
from mmemo.training.trainer import Trainer, train
from tests.conftest import TINY_AUDIO, TINY_TEXT, TINY_VISION, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "own-data.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _flow(value: dict) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


# Tiny encoders and one epoch, so that the walk-through takes seconds; everything else as the doc writes it.
TINY = [f"model.encoders.text={_flow(TINY_TEXT)}", f"model.encoders.audio={_flow(TINY_AUDIO)}",
        f"model.encoders.vision={_flow(TINY_VISION)}", "train.epochs=1", "train.progress=false", "data.num_frames=3",
        "data.max_audio_seconds=3.0"]


def test_the_own_data_walk_through_runs_as_written(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.chdir(tmp_path)
    doc = DOC.read_text()
    own_yaml, hf_yaml = _blocks(doc, "yaml")
    assert own_yaml.startswith("# own.yaml")
    Path("own.yaml").write_text(own_yaml)
    Path("make_my_data.py").write_text(_blocks(doc, "python")[0])
    commands = [shlex.split(line) for block in _blocks(doc, "bash") for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["mmemo", "demo-data"], ["python", "make_my_data.py"], ["mmemo", "train"],
                                         ["mmemo", "evaluate"], ["mmemo", "predict"], ["mmemo", "serve"], ["curl", "-s"]]
    with caplog.at_level(logging.INFO):
        for argv in commands[:5]:
            if argv[0] == "python":
                runpy.run_path(argv[1], run_name="__main__")
            else:
                assert main(argv[1:] + (TINY if argv[1] == "train" else [])) == 0, argv
    run = Path("runs/own")
    # the clip column fed vision and, its track, the audio; the log said so
    assert ("inputs: text <- column 'transcript' (59 of 59 examples); audio <- the audio track of column 'clip' "
            "(59 of 59 examples); vision <- column 'clip' (59 of 59 examples)") in caplog.text
    reasons = {(r["example_id"].split("/")[-1], r["modality"], r["reason"]) for r in csv.DictReader(open(run / "media_issues.csv"))}
    assert {("3", "audio", "no audio track"), ("2", "vision", "cannot decode video")} <= reasons  # rows 2 and 3 of the CSV
    # speaker-disjoint splits, written to the run folder
    speakers = {r["clip"]: r["speaker"] for r in csv.DictReader(open("my_data/labels.csv"))}
    rows = list(csv.DictReader(open("my_data/labels.csv")))
    assigned = {r["id"]: r["split"] for r in csv.DictReader(open(run / "splits.csv"))}
    by_split: dict[str, set] = {}
    for line, row in enumerate(rows, start=2):
        by_split.setdefault(assigned[f"labels/{line}"], set()).add(speakers[row["clip"]])
    assert set(by_split) == {"train", "dev", "test"}
    assert not (by_split["train"] & by_split["dev"]) and not (by_split["train"] & by_split["test"])
    assert (run / "eval_test.json").exists()
    printed = capsys.readouterr().out
    assert re.search(r"\b(" + "|".join(EMOTIONS) + r")\b", printed.split("run folder:")[-1])

    # the served prediction, as the curl command asks for it
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from mmemo.inference import EmotionRecognizer
    from mmemo.serve import create_app

    curl = commands[6]
    form = dict(a.split("=", 1) for a in curl[curl.index("-F") + 1::2] if "=" in a and not a.startswith("http"))
    with TestClient(create_app(EmotionRecognizer.from_pretrained(run, device="cpu"))) as client:
        clip = form.pop("video").lstrip("@")
        answer = client.post("/predict", data=form, files={"video": (Path(clip).name, open(clip, "rb"), "video/mp4")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["modalities"] == ["text", "audio", "vision"] and len(body["top_k"]) == 2

    # the same folder as a videofolder dataset: the same examples, and the same speaker split
    with open("my_data/labels.csv") as f, open("my_data/metadata.csv", "w", newline="") as g:
        text = f.read()
        g.write(text.replace("clip,", "file_name,", 1))
    tiny = tiny_overrides(None)
    hf = load_config(None, {**tiny, "data": {**yaml.safe_load(hf_yaml)["data"], "num_frames": 3}})
    manifest = load_config(None, {**tiny, "data": {**yaml.safe_load(own_yaml)["data"], "num_frames": 3}})
    a, _ = load_splits(hf)
    b, _ = load_splits(manifest)
    for name in ("train", "dev", "test"):
        assert [(Path(x.video).name, x.text, x.label, x.speaker) for x in a[name]] == \
               [(Path(x.video).name, x.text, x.label, x.speaker) for x in b[name]]
        assert all(x.audio == x.video for x in a[name])


def _clips_manifest(tmp_path, demo_tree, header=("clip", "transcript", "emotion")) -> Path:
    rows = [r for r in csv.DictReader(open(demo_tree / "dev_sent_emo.csv"))]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([str(demo_tree / "dev_splits_complete" / f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}.mp4"),
                        r["Utterance"], r["Emotion"]][:len(header)])
    return tmp_path / "t.csv"


def _manifest_config(path, modalities, **data):
    cfg = tiny_overrides(None, modalities)
    cfg["data"] = {"source": "manifest", "path": str(path), "columns": {"video": "clip", "text": "transcript",
                   "label": "emotion"}, "num_frames": 3, **data}
    return load_config(None, cfg)


def test_a_video_column_feeds_audio_unless_audio_is_mapped(tmp_path, demo_tree, caplog):
    path = _clips_manifest(tmp_path, demo_tree)
    with caplog.at_level(logging.INFO, logger="mmemo.data.loading"):
        splits, _ = load_splits(_manifest_config(path, ("text", "audio", "vision")))
        assert all(ex.audio == ex.video for ex in splits["train"])
        assert "audio <- the audio track of column 'clip' (8 of 8 examples)" in caplog.text
        caplog.clear()
        # a model without audio: the log names what it reads, and each example's cache key is the same as above
        splits, _ = load_splits(_manifest_config(path, ("text", "vision")))
        assert "inputs: text <- column 'transcript' (8 of 8 examples); vision <- column 'clip' (8 of 8 examples)" in caplog.text
    mapped = _manifest_config(path, ("text", "audio"), columns={"audio": "transcript", "text": "transcript",
                                                               "label": "emotion"})
    splits, _ = load_splits(mapped)
    # an audio column of its own is kept as it is (here a nonsense one: the transcript as a path)
    assert all(ex.audio.endswith(ex.text) for ex in splits["train"])


def test_a_modality_without_training_examples_is_an_error_naming_it(tmp_path, demo_tree):
    path = _clips_manifest(tmp_path, demo_tree, header=("clip", "transcript", "emotion"))
    config = _manifest_config(path, ("text", "vision"), columns={"text": "transcript", "label": "emotion"},
                              split={"dev": 0.25, "test": 0.0, "stratify": False})
    with pytest.raises(DataError, match=r"model.modalities: vision has no train example \(no video or image in any row\)"):
        Trainer(config, run_dir=tmp_path / "run")


def test_a_modality_whose_every_file_fails_is_an_error_after_the_first_epoch(tmp_path, demo_tree):
    rows = list(csv.DictReader(open(_clips_manifest(tmp_path, demo_tree))))
    with open(tmp_path / "gone.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "clip": f"missing/{i}.mp4"} for i, r in enumerate(rows))
    config = _manifest_config(tmp_path / "gone.csv", ("text", "vision"), split={"dev": 0.25, "test": 0.0,
                                                                              "stratify": False})
    with pytest.raises(DataError, match=r"vision had no usable training example in the first epoch \(media: \d+ unusable"):
        train(config, run_dir=tmp_path / "run")
    assert "missing file" in (tmp_path / "run" / "media_issues.csv").read_text()


def _examples(n=60):
    return [Example(id=f"e{i}", label=EMOTIONS[i % 3] if i % 10 else EMOTIONS[3], speaker=f"s{i % 8}",
                    dialogue_id=f"d{i // 4}") for i in range(n)]


def test_stratified_split_keeps_the_label_mix_and_covers_every_example_once():
    splits = split_examples(_examples(), SplitConfig(dev=0.2, test=0.2, seed=3))
    ids = [ex.id for name in ("train", "dev", "test") for ex in splits[name]]
    assert sorted(ids) == sorted(ex.id for ex in _examples()) and len(set(ids)) == 60
    assert len(splits["test"]) == 12 and len(splits["dev"]) == 12
    for name in ("dev", "test"):  # every class, in about its share
        counts = Counter(ex.label for ex in splits[name])
        assert set(counts) == {EMOTIONS[i] for i in range(4)}
    again = split_examples(_examples(), SplitConfig(dev=0.2, test=0.2, seed=3))
    assert [ex.id for ex in again["dev"]] == [ex.id for ex in splits["dev"]]  # the seed decides


@pytest.mark.parametrize("by", ["speaker", "dialogue"])
@pytest.mark.parametrize("stratify", [True, False])
def test_grouped_splits_never_share_a_group(by, stratify):
    splits = split_examples(_examples(), SplitConfig(by=by, dev=0.25, test=0.25, stratify=stratify))
    key = (lambda ex: ex.speaker) if by == "speaker" else (lambda ex: ex.dialogue_id)
    groups = {name: {key(ex) for ex in splits[name]} for name in ("train", "dev", "test")}
    assert all(groups.values())
    assert not (groups["train"] & groups["dev"]) and not (groups["train"] & groups["test"]) and not (groups["dev"] & groups["test"])


def test_split_options_are_checked():
    with pytest.raises(ConfigError, match=r"data.split: dev \+ test = 1 leaves nothing to train on"):
        load_config(None, {"data": {"source": "manifest", "path": "x.csv", "split": {"dev": 0.5, "test": 0.5}}})
    with pytest.raises(ConfigError, match=r"data.split.by: 'actor' is not allowed; allowed: none, speaker, dialogue"):
        load_config(None, {"data": {"source": "manifest", "path": "x.csv", "split": {"by": "actor"}}})
    with pytest.raises(DataError, match=r"data.split.by: speaker, but 1 example\(s\) have no speaker"):
        split_examples(_examples() + [Example(id="x", label="joy")], SplitConfig(by="speaker"))
