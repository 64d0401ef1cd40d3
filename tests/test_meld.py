import pytest

from mmemo.data.context import attach_context
from mmemo.data.meld import parse_timestamp, read_meld, read_meld_csv
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
    with pytest.raises(DataError, match="row 3"):
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
