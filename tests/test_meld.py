import pytest
import torch

from mmemo.data.context import attach_context
from mmemo.data.readers.meld import parse_timestamp, read_meld, read_meld_csv
from mmemo.data.tables import DataError
from mmemo.data.text import fix_text


def test_both_meld_csv_versions_give_identical_records(shared_data):
    current = read_meld(shared_data / "meld")
    legacy = read_meld(shared_data / "meld" / "legacy_cp1252")
    for split, n in (("train", 9989), ("dev", 1109)):
        a = [(e.id, e.text, e.label, e.speaker, e.meta["start"], e.meta["end"]) for e in current[split]]
        b = [(e.id, e.text, e.label, e.speaker, e.meta["start"], e.meta["end"]) for e in legacy[split]]
        assert len(a) == len(b) == n
        assert a == b
    texts = [e.text for e in legacy["train"]]
    assert not any(ch in t for t in texts for ch in "\x92\x85\x97\xa0Â")
    assert sum("’" in t for t in texts) > 2000


def test_meld_quirks_timestamps_gaps_duplicate_sr_no(shared_data):
    train = read_meld(shared_data / "meld")["train"]
    assert all(e.meta["start"] is not None and e.meta["end"] is not None for e in train)
    # dialogue 1 has utterance ids 0-5 and 8 (SOURCE.md)
    ids = sorted(e.utterance_id for e in train if e.dialogue_id == "train/1")
    assert ids == [0, 1, 2, 3, 4, 5, 8]
    assert len({e.meta["sr_no"] for e in train}) < len(train)  # Sr No. repeats; ids stay unique
    assert len({e.id for e in train}) == len(train)
    assert train[0].audio.endswith("train_splits/dia0_utt0.mp4")


def test_timestamp_forms():
    assert parse_timestamp("0:13:40,766") == pytest.approx(820.766)
    assert parse_timestamp("00:13:40,766") == pytest.approx(820.766)
    assert parse_timestamp("00:00:02.877") == pytest.approx(2.877)
    assert parse_timestamp("garbage") is None


def test_fix_text_maps_legacy_and_mojibake_forms():
    assert fix_text("can\x92t") == fix_text("canÂ’t") == fix_text("can’t") == "can’t"
    assert fix_text("wait\x85 what\xa0 now") == "wait… what  now"
    assert fix_text("café") == "café"


def test_missing_column_is_fatal_and_named(tmp_path):
    p = tmp_path / "train_sent_emo.csv"
    p.write_text("Sr No.,Utterance,Speaker,Dialogue_ID,Utterance_ID\n1,hi,Joey,0,0\n")
    with pytest.raises(DataError, match=r"train_sent_emo.csv: missing column\(s\) Emotion"):
        read_meld_csv(p, "train", None)


def test_bad_row_is_named(tmp_path):
    p = tmp_path / "train_sent_emo.csv"
    p.write_text("Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\nhi,Joey,joy,0,0\nyo,Ross,joy,x,1\n")
    with pytest.raises(DataError, match="line 3"):
        read_meld_csv(p, "train", None)


def test_csv_only_tree_reads_as_text(tmp_path, shared_data):
    (tmp_path / "dev_sent_emo.csv").write_bytes((shared_data / "meld" / "dev_sent_emo.csv").read_bytes())
    (tmp_path / "train_sent_emo.csv").write_bytes((shared_data / "meld" / "dev_sent_emo.csv").read_bytes())
    splits = read_meld(tmp_path)
    assert set(splits.names()) == {"train", "dev"}
    assert len(splits["dev"]) == 1109 and all(e.text for e in splits["dev"])


def test_context_respects_dialogue_boundaries_and_gaps(shared_data):
    train = read_meld(shared_data / "meld")["train"]
    with_ctx = attach_context(train, past=2, future=1)
    by_id = {e.id: e for e in with_ctx}
    # dialogue 1: ids 0-5 then 8; the turn before 8 is 5, the turn after 5 is 8
    d1_8, d1_5 = by_id["train/dia1_utt8"], by_id["train/dia1_utt5"]
    texts = {e.id: e.text for e in train}
    assert [t.text for t in d1_8.context_before] == [texts["train/dia1_utt4"], texts["train/dia1_utt5"]]
    assert d1_8.context_after == ()  # the last turn of its dialogue: nothing from dialogue 2
    assert [t.text for t in d1_5.context_after] == [texts["train/dia1_utt8"]]
    first = by_id["train/dia2_utt0"]
    assert first.context_before == ()
    dialogue_texts: dict[str, set[str]] = {}
    for x in train:
        dialogue_texts.setdefault(x.dialogue_id, set()).add(x.text)
    for e in with_ctx:
        assert all(t.text in dialogue_texts[e.dialogue_id] for t in e.context_before + e.context_after)


def test_text_with_context_marks_the_target_and_pools_only_it(shared_data):
    from mmemo.config import from_dict
    from mmemo.models.encoders.text import HFTextConfig, HFTextEncoder, TextProcessor
    from tests.conftest import TINY_TEXT

    train = attach_context(read_meld(shared_data / "meld")["train"], past=2, future=1)
    example = next(e for e in train if e.id == "train/dia1_utt5")  # before: utt3, utt4; after: utt8 (ids skip 6, 7)
    config = from_dict(HFTextConfig, {**TINY_TEXT, "max_length": 64, "context_turns": 2, "future_turns": 1})
    processor = TextProcessor(config)
    tok = processor.tokenizer
    full = processor(example)
    target = full["input_ids"][full["target_mask"]].tolist()
    assert target == tok(f"{example.speaker}: {example.text}", add_special_tokens=False)["input_ids"]
    ids = full["input_ids"].tolist()
    start = full["target_mask"].nonzero()[0].item()
    previous = tok(f"{example.context_before[-1].speaker}: {example.context_before[-1].text}", add_special_tokens=False)["input_ids"]
    assert ids[start - 1 - len(previous):start - 1] == previous  # the turn just before, then [SEP], then the target
    following = tok(f"{example.context_after[0].speaker}: {example.context_after[0].text}", add_special_tokens=False)["input_ids"]
    assert ids[start + len(target) + 1:start + len(target) + 1 + len(following)] == following

    config.max_length = 20  # a tight budget keeps the whole target and the most recent context
    short = processor(example)
    assert len(short["input_ids"]) <= 20
    assert short["input_ids"][short["target_mask"]].tolist() == target
    assert short["input_ids"][short["target_mask"].nonzero()[0].item() - 2].item() == previous[-1]

    encoder = HFTextEncoder(config).eval()
    emb = encoder(**processor.collate([full]))
    mask = full["target_mask"]
    assert torch.allclose(emb.pooled[0], emb.seq[0, mask].mean(0), atol=1e-6)
    assert not torch.allclose(emb.pooled[0], emb.seq[0].mean(0), atol=1e-3)  # context informs, does not dilute


@pytest.mark.parametrize("max_length", [12, 20, 32])
def test_text_with_context_fits_max_length_and_keeps_the_target(shared_data, max_length):
    from mmemo.data.examples import Turn
    from mmemo.models.encoders.text import HFTextConfig, TextProcessor

    dev = attach_context(read_meld(shared_data / "meld")["dev"], past=3, future=2)[:200]
    processor = TextProcessor(HFTextConfig(context_turns=3, future_turns=2, max_length=max_length))
    for example in dev:
        out = processor(example)
        ids = out["input_ids"].tolist()
        target = processor._ids(processor._format(Turn(example.speaker, example.text)))
        assert len(ids) <= max_length and ids[0] == processor.bos and ids[-1] == processor.sep, example.id
        if len(target) <= max_length - 4:  # room for [CLS], [SEP]s and the target: it is never cut
            assert out["input_ids"][out["target_mask"]].tolist() == target, example.id


def test_pool_layers_pools_the_mean_of_the_last_layers(shared_data):
    from mmemo.config import from_dict
    from mmemo.models.encoders.base import masked_mean
    from mmemo.models.encoders.text import HFTextConfig, HFTextEncoder, TextProcessor
    from tests.conftest import TINY_TEXT

    train = attach_context(read_meld(shared_data / "meld")["train"], past=1)
    examples = [e for e in train if e.context_before][:3]
    settings = {**TINY_TEXT, "max_length": 64, "context_turns": 1,
                "model_overrides": {**TINY_TEXT["model_overrides"], "num_hidden_layers": 3}}
    torch.manual_seed(0)
    last = HFTextEncoder(from_dict(HFTextConfig, settings)).eval()
    two = HFTextEncoder(from_dict(HFTextConfig, {**settings, "pool_layers": 2})).eval()
    two.load_state_dict(last.state_dict())  # the same weights; only the pooling differs
    processor = TextProcessor(last.config)
    batch = processor.collate([processor(e) for e in examples])

    states = last.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"].long(),
                        output_hidden_states=True).hidden_states
    torch.testing.assert_close(last(**batch).pooled, masked_mean(states[-1], batch["target_mask"]))
    expected = masked_mean((states[-1] + states[-2]) / 2, batch["target_mask"])
    torch.testing.assert_close(two(**batch).pooled, expected)
    assert not torch.allclose(two(**batch).pooled, last(**batch).pooled)
    with pytest.raises(ValueError, match="pool_layers must be in \\[1, 3\\]"):
        HFTextEncoder(from_dict(HFTextConfig, {**settings, "pool_layers": 4}))
