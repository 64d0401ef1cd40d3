import dataclasses
import json

import pytest
import torch

from mmemo.cli import main
from mmemo.config import ConfigError, load_config
from mmemo.training.adapt import _head_of, adapt_text_encoder
from tests.conftest import minilm_path, tiny_overrides


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A small random BERT with MiniLM's tokenizer, saved as a pretrained checkpoint folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _config(demo_tree, checkpoint, **text):
    cfg = tiny_overrides(demo_tree, ("text",))
    cfg["model"]["encoders"]["text"].update({"checkpoint": str(checkpoint), "pretrained": True, "model_overrides": {},
                                             "context_turns": 1, **text})
    return load_config(None, cfg)


def test_masked_positions_only_give_the_full_masked_lm_loss(tiny_bert):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    head = _head_of(model)
    assert head is model.cls
    ids = torch.randint(1000, 2000, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, [2, 5, 9]] = ids[:, [2, 5, 9]]
    with torch.no_grad():
        full = model(input_ids=ids, labels=labels).loss
        hidden = model.base_model(input_ids=ids).last_hidden_state
        picked = labels != -100
        part = torch.nn.functional.cross_entropy(head(hidden[picked]), labels[picked])
    assert part.item() == pytest.approx(full.item(), rel=1e-5)


def test_adapt_learns_the_training_text_and_hf_text_loads_the_result(demo_tree, tiny_bert, tmp_path):
    from transformers import AutoModel

    from mmemo.models.encoders.text import HFTextEncoder

    config = _config(demo_tree, tiny_bert)
    out = tmp_path / "adapted"
    result = adapt_text_encoder(config, out, epochs=4, lr=1e-3, head_lr=0.1, batch_size=4, seed=0, progress=False)
    assert result.examples == 16 and result.steps == 4 * 4  # the 16 training utterances, dev and test unused
    assert result.loss_by_epoch[-1] < result.loss_by_epoch[0] - 0.5
    record = json.loads((out / "adapt.json").read_text())
    assert record["data"]["split"] == "train" and record["loss_by_epoch"] == result.loss_by_epoch
    assert not out.with_name("adapted.tmp").exists()

    before, after = AutoModel.from_pretrained(tiny_bert), AutoModel.from_pretrained(out)
    changed = [n for n, p in after.named_parameters() if not torch.equal(p, dict(before.named_parameters())[n])]
    assert "embeddings.word_embeddings.weight" in changed and any("layer.1." in n for n in changed)
    assert not any("pooler" in n for n in changed)  # what masked-LM training does not reach is the source's own

    encoder = HFTextEncoder(dataclasses.replace(config.model.encoders["text"], checkpoint=str(out)))
    assert torch.equal(encoder.model.embeddings.word_embeddings.weight, after.embeddings.word_embeddings.weight)


def test_adapt_is_repeatable_with_a_seed(demo_tree, tiny_bert, tmp_path):
    config = _config(demo_tree, tiny_bert)
    a = adapt_text_encoder(config, tmp_path / "a", epochs=1, batch_size=4, seed=3, progress=False)
    b = adapt_text_encoder(config, tmp_path / "b", epochs=1, batch_size=4, seed=3, progress=False)
    assert a.loss_by_epoch == b.loss_by_epoch


def test_adapt_errors_name_the_key(demo_tree, tiny_bert, tmp_path, capsys):
    with pytest.raises(ConfigError, match="pretrained is false"):
        adapt_text_encoder(_config(demo_tree, tiny_bert, pretrained=False), tmp_path / "x", progress=False)
    audio_only = load_config(None, tiny_overrides(demo_tree, ("audio",)))
    with pytest.raises(ConfigError, match="no text encoder"):
        adapt_text_encoder(audio_only, tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="--mask-prob"):
        adapt_text_encoder(_config(demo_tree, tiny_bert), tmp_path / "x", mask_prob=1.5, progress=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.safetensors").write_text("an earlier adaptation")
    with pytest.raises(ConfigError, match="already exists"):
        adapt_text_encoder(_config(demo_tree, tiny_bert), taken, progress=False)
    assert (taken / "model.safetensors").read_text() == "an earlier adaptation"
    assert main(["adapt", "configs/demo.yaml", "model.modalities=[audio]", "--out", str(tmp_path / "x")]) == 2
    assert "no text encoder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
