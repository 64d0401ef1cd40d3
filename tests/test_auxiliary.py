"""Auxiliary training corpora (data.auxiliary) and the EmoryNLP reader they were built for."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from mmemo.config import ConfigError, load_config
from mmemo.data.loading import episode, load_splits
from mmemo.data.readers.emorynlp import parse_speakers, read_emorynlp
from mmemo.data.readers.meld import read_meld_csv
from mmemo.data.tables import DataError
from mmemo.labels import IGNORE, LABEL_SETS, LabelError
from mmemo.models.model import EmotionModel
from mmemo.training.loss_terms.auxiliary_heads import AuxiliaryHeads
from mmemo.training.losses import FocalLoss, WeightedCrossEntropy, cross_entropy
from mmemo.training.trainer import Trainer
from tests.conftest import tiny_config


def aux_heads(trainer: Trainer) -> AuxiliaryHeads:
    return next(t for t in trainer.loss_terms if isinstance(t, AuxiliaryHeads))

EMORY = list(LABEL_SETS["emorynlp7"])
COLUMNS = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode", "Start_Time", "End_Time"]


def write_emorynlp(root, rows_by_split):
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        with open(root / f"emorynlp_{split}_final.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows(rows)
    return root


def scene(season, episode, scene_id, n, emotions=("Joyful", "Mad", "Neutral", "Scared")):
    return [[f"line {i} of scene {scene_id}", "['Ross Geller']", emotions[i % len(emotions)], scene_id, i + 1,
             season, episode, "00:00:01.000", "00:00:02.500"] for i in range(n)]


def test_emorynlp_reader_reads_the_shared_csvs(shared_data):
    splits = read_emorynlp(shared_data / "emorynlp")
    assert {k: len(splits[k]) for k in splits.names()} == {"train": 7551, "dev": 954}
    first = splits["train"][0]
    assert first.speaker == "Monica Geller" and first.label == "Joyful" and first.text.startswith("What you guys")
    assert first.dialogue_id == "train/s1e2c1" and first.utterance_id == 1 and episode(first) == (1, 2)
    assert first.meta["start"] == pytest.approx(2.877)
    # a scene is a dialogue: 659 scenes in train, every utterance of one scene in one dialogue
    assert len({ex.dialogue_id for ex in splits["train"]}) == 659
    assert {ex.label.lower() for ex in splits["train"]} == set(EMORY)


def test_emorynlp_reader_names_the_row_of_bad_input(tmp_path):
    assert parse_speakers("['Ross Geller', 'Joey Tribbiani']") == "Ross Geller and Joey Tribbiani"
    assert parse_speakers("Gunther") == "Gunther" and parse_speakers("[]") is None
    bad = scene(1, 1, 1, 2)
    bad[1][4] = "two"
    write_emorynlp(tmp_path / "a", {"train": bad})
    with pytest.raises(DataError, match=r"emorynlp_train_final.csv: line 3: .*must be integers"):
        read_emorynlp(tmp_path / "a")
    twice = scene(1, 1, 1, 2)
    twice[1][4] = 1
    write_emorynlp(tmp_path / "b", {"train": twice})
    with pytest.raises(DataError, match=r"line 3: duplicate .* train/s1e1c1u1 \(first on line 2\)"):
        read_emorynlp(tmp_path / "b")
    write_emorynlp(tmp_path / "c", {"dev": scene(1, 1, 1, 2)})
    with pytest.raises(DataError, match="emorynlp_train_final.csv not found"):
        read_emorynlp(tmp_path / "c")


def aux_config(demo_tree, emory_root, **extra):
    return tiny_config(demo_tree, ("text",), data__auxiliary={"emorynlp": {"source": "emorynlp", "root": str(emory_root),
                                                                              "label_set": "emorynlp7"}}, **extra)


def test_auxiliary_corpus_joins_train_without_the_episodes_of_dev_and_test(demo_tree, tmp_path):
    dev = read_meld_csv(demo_tree / "dev_sent_emo.csv", "dev", None)
    test = read_meld_csv(demo_tree / "test_sent_emo.csv", "test", None)
    dev_ep, test_ep = episode(dev[0]), episode(test[0])
    train_eps = {episode(ex) for ex in read_meld_csv(demo_tree / "train_sent_emo.csv", "train", None)}
    held = {episode(ex) for ex in dev + test}
    free = next((s, e) for s in range(1, 10) for e in range(1, 25) if (s, e) not in held)
    rows = scene(*dev_ep, 1, 3) + scene(*test_ep, 2, 2) + scene(*free, 3, 4)
    write_emorynlp(tmp_path / "emory", {"train": rows})

    config = aux_config(demo_tree, tmp_path / "emory", model__encoders__text__context_turns=1)
    assert config.model.aux_labels == {"emorynlp": EMORY}  # filled in from the corpus's label set
    splits, labels = load_splits(config)
    aux = [ex for ex in splits["train"] if ex.meta.get("corpus") == "emorynlp"]
    main = [ex for ex in splits["train"] if "corpus" not in ex.meta]
    assert len(main) == 16 and {episode(ex) for ex in main} == train_eps
    # only the scene from an episode that dev and test do not hold is kept
    assert len(aux) == 4 and {episode(ex) for ex in aux} == {free}
    assert all(ex.label is None for ex in aux)
    assert [ex.meta["emorynlp"] for ex in aux] == ["joyful", "mad", "neutral", "scared"]
    assert aux[0].id.startswith("emorynlp/train/") and aux[1].context_before[0].text == "line 0 of scene 3"
    assert [len(splits[s]) for s in ("dev", "test")] == [len(dev), len(test)]  # selection and test untouched


def test_auxiliary_paths_in_a_config_file_are_relative_to_its_folder(tmp_path):
    write_emorynlp(tmp_path / "data" / "emory", {"train": scene(1, 1, 1, 2)})
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "aux.yaml"
    path.write_text("data:\n  source: meld\n  root: ../data/meld\n"
                    "  auxiliary:\n    emorynlp: {source: emorynlp, root: ../data/emory, label_set: emorynlp7}\n")
    config = load_config(path)
    assert config.data.auxiliary["emorynlp"].root == str(tmp_path / "configs" / ".." / "data" / "emory")
    assert len(read_emorynlp(config.data.auxiliary["emorynlp"].root)["train"]) == 2


def test_auxiliary_config_errors_name_the_key(demo_tree, tmp_path):
    root = write_emorynlp(tmp_path / "emory", {"train": scene(1, 1, 1, 2)})
    with pytest.raises(ConfigError, match="data.auxiliary.emorynlp.auxiliary: an auxiliary corpus cannot"):
        aux_config(demo_tree, root, data__auxiliary__emorynlp__auxiliary={"x": {"source": "meld"}})
    with pytest.raises(ConfigError, match=r"model.aux_labels.emorynlp: \['a', 'b'\] differs from the label set"):
        aux_config(demo_tree, root, model__aux_labels={"emorynlp": ["a", "b"]})
    with pytest.raises(ConfigError, match="data.auxiliary.split: 'split' is a field every example carries"):
        tiny_config(demo_tree, ("text",), data__auxiliary={"split": {"source": "emorynlp", "root": str(root)}})
    with pytest.raises(ConfigError, match="train.sampler: balanced is not supported with data.auxiliary"):
        aux_config(demo_tree, root, train__sampler="balanced")
    with pytest.raises(ConfigError, match="data.auxiliary.extra: a manifest needs path"):
        tiny_config(demo_tree, ("text",), data__auxiliary={"extra": {"source": "manifest"}})
    with pytest.raises(ConfigError, match="data.auxiliary.emorynlp.source"):
        aux_config(demo_tree, root, data__auxiliary__emorynlp__source="emory")
    config = aux_config(demo_tree, root, data__auxiliary__emorynlp__label_map={"Mad": "anger"})
    with pytest.raises(LabelError, match=r"line 3 \(split train of data.auxiliary.emorynlp\): label 'anger' is not"):
        load_splits(config)


def test_main_label_map_gives_mapped_auxiliary_rows_an_emotion_label_too(demo_tree, tmp_path):
    held = {episode(ex) for split in ("dev", "test") for ex in read_meld_csv(demo_tree / f"{split}_sent_emo.csv", split, None)}
    free = next((s, e) for s in range(1, 10) for e in range(1, 25) if (s, e) not in held)
    root = write_emorynlp(tmp_path / "emory", {"train": scene(*free, 1, 8)})
    config = aux_config(demo_tree, root, train__epochs=1, train__eval_test=False, train__batch_size=4,
                        data__auxiliary__emorynlp__main_label_map={"Joyful": "joy", "mad": "Anger", "Scared": "fear"})
    splits, _ = load_splits(config)
    aux = [ex for ex in splits["train"] if ex.meta.get("corpus") == "emorynlp"]
    assert [(ex.meta["emorynlp"], ex.label) for ex in aux[:4]] == [
        ("joyful", "joy"), ("mad", "anger"), ("neutral", None), ("scared", "fear")]  # neutral is not in the map
    trainer = Trainer(config, run_dir=tmp_path / "run")
    main = [ex for ex in trainer.splits["train"] if "corpus" not in ex.meta]
    counts = dict(zip(trainer.label_set.names, trainer.class_counts))
    assert counts["fear"] == sum(ex.label == "fear" for ex in main) + 2  # two scared rows join the emotion head
    assert counts["neutral"] == sum(ex.label == "neutral" for ex in main)
    targets = aux_heads(trainer).targets["emorynlp"]
    assert all(t >= 0 for t, ex in zip(targets.tolist(), trainer.splits["train"]) if ex.meta.get("corpus"))

    with pytest.raises(ConfigError, match=r"data.auxiliary.emorynlp.main_label_map: 'glad' is not a label of"):
        aux_config(demo_tree, root, data__auxiliary__emorynlp__main_label_map={"glad": "joy"})
    with pytest.raises(ConfigError, match=r"data.auxiliary.emorynlp.main_label_map.Powerful: 'pride' is not a label "
                                          r"of the main corpus"):
        aux_config(demo_tree, root, data__auxiliary__emorynlp__main_label_map={"Powerful": "pride"})
    with pytest.raises(ConfigError, match=r"data.main_label_map: only an auxiliary corpus"):
        tiny_config(demo_tree, ("text",), data__main_label_map={"joy": "joy"})


def test_unlabelled_rows_add_nothing_to_the_losses():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, IGNORE, 2, IGNORE, 3, 1])
    kept = target != IGNORE
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0])
    expected = F.cross_entropy(logits[kept], target[kept], weight=weight, label_smoothing=0.1)
    assert WeightedCrossEntropy(weight, 0.1)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    focal = FocalLoss(2.0, weight)
    assert focal(logits, target).item() == pytest.approx(focal(logits[kept], target[kept]).item(), rel=1e-6)
    none = torch.full((6,), IGNORE)
    for loss in (cross_entropy(logits, none), focal(logits, none)):
        loss.backward()  # a batch with no label for this head: 0, and a zero gradient rather than NaN
        assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


def test_training_with_an_auxiliary_corpus_trains_its_head_on_its_rows_only(demo_tree, tmp_path):
    dev_held = {episode(ex) for split in ("dev", "test") for ex in read_meld_csv(demo_tree / f"{split}_sent_emo.csv", split, None)}
    free = [(s, e) for s in range(1, 10) for e in range(1, 25) if (s, e) not in dev_held]
    root = write_emorynlp(tmp_path / "emory", {"train": scene(*free[0], 1, 6) + scene(*free[1], 2, 6)})
    config = aux_config(demo_tree, root, train__epochs=2, train__eval_test=False, train__batch_size=8,
                        train__loss_terms=[{"name": "aux_heads", "weight": 0.7}],
                        train__sampler="length_bucketed")
    trainer = Trainer(config, run_dir=tmp_path / "run")
    rows = trainer.splits["train"]
    assert len(rows) == 28 and sum(ex.label is None for ex in rows) == 12
    targets = aux_heads(trainer).targets["emorynlp"]
    assert [t for t, ex in zip(targets.tolist(), rows) if ex.label is not None] == [IGNORE] * 16
    assert all(t >= 0 for t, ex in zip(targets.tolist(), rows) if ex.label is None)
    assert trainer.class_counts == [sum(ex.label == c for ex in rows) for c in trainer.label_set.names]

    batch = next(b for b in trainer.train_loader if 0 < int((b["labels"] == IGNORE).sum()) < len(b["labels"]))
    trainer.model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(batch)
    torch.manual_seed(3)
    out = trainer.model(batch["inputs"], batch["present"], batch["labels"], trainer.criterion)
    labelled = batch["labels"] != IGNORE
    emotion = F.cross_entropy(out.logits[labelled], batch["labels"][labelled])
    aux_target = targets[batch["index"]]
    aux = F.cross_entropy(out.aux_logits["emorynlp"][aux_target >= 0], aux_target[aux_target >= 0])
    assert out.loss.item() == pytest.approx(emotion.item(), rel=1e-5)
    assert loss.item() == pytest.approx((emotion + 0.7 * aux).item(), rel=1e-5)

    before = trainer.unwrapped.aux_heads["emorynlp"][-1].weight.detach().clone()
    result = trainer.fit()
    assert not torch.equal(before, trainer.unwrapped.aux_heads["emorynlp"][-1].weight)
    assert len(result.history) == 2 and all(math.isfinite(h["train_loss"]) for h in result.history)
    model, saved, labels = EmotionModel.from_pretrained(tmp_path / "run" / "best")
    assert saved.model.aux_labels == {"emorynlp": EMORY} and len(labels) == 7
    assert load_config(tmp_path / "run" / "config.yaml").data.auxiliary["emorynlp"].source == "emorynlp"
