import pytest

from mmemo.config import ConfigError, load_config, parse_overrides
from tests.conftest import tiny_overrides


def test_defaults_load_and_overrides_apply():
    cfg = load_config(None, ["train.lr=3e-5", "model.modalities=[text, audio]", "data.num_frames=4"])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.model.modalities == ["text", "audio"]
    assert cfg.data.num_frames == 4
    assert cfg.model.encoders["audio"].name == "logmel_cnn"


def test_yaml_file_and_cli_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\nmodel: {modalities: [text]}\n")
    cfg = load_config(path, ["train.epochs=5"])
    assert cfg.train.epochs == 5 and cfg.model.modalities == ["text"]


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("train.lrr=1", "train.lrr", "lr"),
        ("model.fusion.dimm=3", "model.fusion.dimm", "dim"),
        ("model.encoders.text.chekpoint=x", "model.encoders.text.chekpoint", "checkpoint"),
        ("trian.lr=1", "trian", "train"),
    ],
)
def test_unknown_key_names_key_and_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert msg.startswith(key) and "unknown key" in msg and allowed in msg


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.epochs=abc", "train.epochs", "integer"),
        ("train.lr=fast", "train.lr", "number"),
        ("train.deterministic=maybe", "train.deterministic", "true or false"),
        ("train.loss=hinge", "train.loss", "ce, focal"),
        ("model.modalities=text", "model.modalities", "list"),
    ],
)
def test_wrong_type_names_key_and_what_is_allowed(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(key) and expected in str(err.value)


def test_unknown_encoder_and_fusion_names_list_registered():
    with pytest.raises(ConfigError, match=r"model.encoders.text.name: unknown encoder 'bert'; allowed: .*hf_text"):
        load_config(None, ["model.encoders.text.name=bert"])
    with pytest.raises(ConfigError, match=r"model.fusion.name: unknown fusion 'magic'; allowed: .*concat"):
        load_config(None, ["model.fusion.name=magic"])


def test_encoder_of_wrong_modality_is_rejected():
    with pytest.raises(ConfigError, match="model.encoders.audio.name: 'timm' is a vision encoder"):
        load_config(None, ["model.encoders.audio.name=timm"])


def test_unknown_modality_and_test_selection_rejected():
    with pytest.raises(ConfigError, match="unknown modality 'smell'"):
        load_config(None, ["model.modalities=[text, smell]"])
    with pytest.raises(ConfigError, match="train.select_on"):
        load_config(None, ["train.select_on=test"])


def test_parse_overrides_values_are_yaml():
    tree = parse_overrides(["a.b=1", "a.c=[x, y]", "d=null", "e=true"])
    assert tree == {"a": {"b": 1, "c": ["x", "y"]}, "d": None, "e": True}
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["nonsense"])


def test_bare_no_is_the_choice_no_not_false(tmp_path):
    # YAML 1.1 reads `no` as False; `train.precision: no` means the choice "no" in a file and on the CLI.
    assert load_config(None, ["train.precision=no"]).train.precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  precision: no\n")
    assert load_config(path).train.precision == "no"
    with pytest.raises(ConfigError, match="train.loss: False is not allowed"):  # no "no" among its choices
        load_config(None, ["train.loss=no"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, tiny_overrides())
    cfg.save(tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_configs_of_earlier_versions_load_and_retired_settings_say_what_replaced_them():
    earlier = tiny_overrides(None, ("text",))
    earlier["data"].update({"label_column": None, "manifest": {"path": None, "paths": {}, "columns": {}}})
    earlier["model"]["encoders"]["text"].update({"pool_speaker_name": True, "ascii_punctuation": False,
                                                 "target_segment": False, "context_dropout": 0.0})
    earlier["train"].update({"rdrop_alpha": 0.0, "supcon_weight": 0.3, "supcon_temperature": 0.2, "distill_weight": 0.0,
                             "l2_penalty": 0.1, "aux_weight": 0.5, "bucket_by": "input"})
    config = load_config(None, earlier)  # a saved model's config.yaml from before loss terms
    assert [(t.name, t.weight) for t in config.train.loss_terms] == [("supcon", 0.3), ("l2", 0.1)]
    assert config.train.loss_terms[0].temperature == 0.2
    manifest = {"source": "manifest", "root": "data/MELD.Raw", "label_column": "emotion", "label_set": "emodb7",
                "manifest": {"path": "labels.csv", "columns": {"audio": "file"}, "split_column": "speaker"}}
    data = load_config(None, {**tiny_overrides(None, ("audio",)), "data": manifest}).data
    assert (data.path, data.columns, data.split_column) == ("labels.csv", {"audio": "file", "label": "emotion"}, "speaker")
    earlier["model"]["encoders"]["text"]["target_segment"] = True  # a setting that changed the model: not dropped
    with pytest.raises(ConfigError, match=r"model.encoders.text.target_segment: unknown key \(removed; it measured no gain"):
        load_config(None, earlier)
    assert [(t.name, t.weight) for t in load_config(None, ["train.l2_penalty=0.1"]).train.loss_terms] == [("l2", 0.1)]
    assert load_config(None, ["data.source=manifest", "data.manifest.path=x.csv"]).data.path == "x.csv"
