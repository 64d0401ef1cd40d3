"""The embedding cache: frozen encoders run once per example, across runs and sweeps, and never serve stale
or corrupt entries."""

import collections
import csv
import logging
import os

import pytest
import torch

from mmemo.ablation import ablate
from mmemo.config import load_config
from mmemo.data.dataset import Collator, EmotionDataset
from mmemo.data.loading import load_splits
from mmemo.models.encoders.base import Encoder
from mmemo.models.model import EmotionModel
from mmemo.training.cache import EmbeddingCache, cache_frozen_encoders, encoder_fingerprint, example_key
from tests.conftest import tiny_config, tiny_overrides


@pytest.fixture
def encoder_rows():
    """Examples run through each modality's encoder (rows of every forward call), by modality."""
    counts = collections.Counter()

    def hook(module, args, output):
        if isinstance(module, Encoder):
            counts[module.modality] += output.pooled.shape[0]

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield counts
    handle.remove()


def _frozen(root, modalities=("text", "audio", "vision"), **extra):
    cfg = tiny_overrides(root, modalities, **extra)
    for m in modalities:
        cfg["model"]["encoders"][m]["freeze"] = True
    return load_config(None, cfg)


BROKEN = {("train/dia0_utt0", "audio"), ("train/dia0_utt0", "vision"), ("train/dia0_utt1", "audio"),
          ("train/dia0_utt1", "vision"), ("train/dia0_utt2", "audio")}


def test_seven_combination_sweep_runs_each_frozen_encoder_once_per_example(demo_tree, tmp_path, encoder_rows):
    config = _frozen(demo_tree, data__cache_dir=str(tmp_path / "cache"))
    out = ablate(config, modalities="all", fusions=["concat"], seeds=[0], out_dir=tmp_path / "sweep")

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["modalities"] for r in rows] == ["text", "audio", "vision", "text+audio", "text+vision", "audio+vision",
                                               "text+audio+vision"]
    assert all(r["status"] == "ok" and float(r["dev_weighted_f1"]) >= 0 for r in rows)
    # 32 examples; the demo's three broken train clips are never run through an encoder
    assert dict(encoder_rows) == {"text": 32, "audio": 29, "vision": 30}
    # with the cache on, broken media are still marked absent and reported, in every run that uses them
    for r in rows:
        issues = {(i["example_id"], i["modality"]) for i in csv.DictReader(open(os.path.join(r["run_dir"], "media_issues.csv")))}
        assert issues == {(e, m) for e, m in BROKEN if m in r["modalities"].split("+")}, r["modalities"]

    # a restart finds every run finished: nothing is trained or encoded again
    encoder_rows.clear()
    ablate(config, modalities="all", fusions=["concat"], seeds=[0], out_dir=out)
    assert not encoder_rows
    assert (out / "results.md").exists() and (out / "results.png").stat().st_size > 1000


def test_cached_embeddings_equal_what_the_encoder_computes(demo_tree, tmp_path):
    config = _frozen(demo_tree, ("text", "vision"), data__cache_dir=str(tmp_path))
    splits, labels = load_splits(config)
    model = EmotionModel(config.model, len(labels), seed=0).eval()
    live = {m: type(e).build_processor(config.model.encoders[m], config.data) for m, e in model.encoders.items()}
    cached = cache_frozen_encoders(model, live, splits["dev"], config)
    assert all(type(p).__name__ == "CachedProcessor" for p in cached.values())
    items = lambda procs: [EmotionDataset(splits["dev"], procs, labels)[i] for i in range(6)]  # noqa: E731
    a, b = Collator(live)(items(live)), Collator(cached)(items(cached))
    assert torch.equal(a["present"], b["present"])
    with torch.no_grad():
        ea, eb = model.encode(a["inputs"], a["present"]), model.encode(b["inputs"], b["present"])
        la, lb = model(a["inputs"], a["present"]).logits, model(b["inputs"], b["present"]).logits
    for m in ("text", "vision"):
        assert torch.allclose(ea[m].pooled, eb[m].pooled, atol=1e-5)
        t = eb[m].seq.shape[1]  # the cache drops trailing padding
        assert torch.equal(ea[m].mask[:, :t], eb[m].mask) and not ea[m].mask[:, t:].any()
        real = eb[m].mask  # padded positions hold whatever the encoder left there; only real tokens count
        assert torch.allclose(ea[m].seq[:, :t][real], eb[m].seq[real], atol=1e-5)
    assert torch.allclose(la, lb, atol=1e-5)


def test_a_changed_config_weights_or_example_is_a_different_entry(demo_tree):
    config = _frozen(demo_tree, ("text",))
    model = EmotionModel(config.model, 7, seed=0)
    proc = type(model.encoders["text"]).build_processor(config.model.encoders["text"], config.data)

    def fp(cfg=config, seed=0, precision="no"):
        m = EmotionModel(cfg.model, 7, seed=seed)
        return encoder_fingerprint("text", m.encoders["text"], proc, cfg.data, precision)

    base = fp()
    assert fp() == base  # same config, same seed: the same weights
    assert fp(_frozen(demo_tree, ("text",), model__encoders__text__lr=0.5)) == base  # lr cannot change an output
    assert fp(seed=1)["weights"] != base["weights"]
    assert fp(_frozen(demo_tree, ("text",), data__num_frames=5))["preprocessing"] != base["preprocessing"]
    cfg = tiny_overrides(demo_tree, ("text",))
    cfg["model"]["encoders"]["text"].update(freeze=True, max_length=16)
    assert fp(load_config(None, cfg))["encoder"] != base["encoder"]
    assert fp(precision="bf16") != base

    splits, _ = load_splits(config)
    ex = splits["train"][5]
    key = example_key(ex)
    ex.label = "anger"
    assert example_key(ex) == key  # relabelling keeps the embedding
    ex.text += "!"
    assert example_key(ex) != key
    ex.text = ex.text[:-1]
    os.utime(ex.video, ns=(0, os.stat(ex.video).st_mtime_ns + 10**9))  # the clip was replaced
    assert example_key(ex) != key


def test_corrupt_or_partial_shards_are_detected_and_rebuilt(demo_tree, tmp_path, caplog, encoder_rows):
    config = _frozen(demo_tree, ("text",), data__cache_dir=str(tmp_path))
    splits, labels = load_splits(config)
    model = EmotionModel(config.model, len(labels), seed=0)
    proc = {"text": type(model.encoders["text"]).build_processor(config.model.encoders["text"], config.data)}
    dev = splits["dev"]

    def read_all():
        cached = cache_frozen_encoders(model, proc, dev, config)["text"]
        return [cached(ex)["pooled"] for ex in dev]

    first = read_all()
    assert encoder_rows["text"] == len(dev)
    (cache_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("text-")]
    (shard,) = cache_dir.glob("*.safetensors")
    (cache_dir / f".{shard.name}.123.tmp").write_bytes(shard.read_bytes()[:100])  # an interrupted write

    encoder_rows.clear()
    assert all(torch.equal(a, b) for a, b in zip(first, read_all()))
    assert not encoder_rows  # served from disk; the temporary file was never read

    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the tensor data: the header still parses
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert len(EmbeddingCache(cache_dir)) == 0
    assert "corrupt or incomplete" in caplog.text and not shard.exists()
    assert all(torch.equal(a, b) for a, b in zip(first, read_all()))
    assert encoder_rows["text"] == len(dev)  # recomputed, not read from the bad file

    (shard,) = cache_dir.glob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:-64])  # truncated
    assert len(EmbeddingCache(cache_dir)) == 0


def test_embedding_cache_off_runs_the_encoder(demo_tree, tmp_path, encoder_rows):
    from mmemo.training.trainer import Trainer

    config = _frozen(demo_tree, ("text",), data__embedding_cache=False, data__cache_dir=str(tmp_path),
                     train__max_steps=1, data__max_examples=4)
    trainer = Trainer(config, run_dir=tmp_path / "run")
    assert type(trainer.processors["text"]).__name__ == "TextProcessor"
    trainer.fit()
    assert encoder_rows["text"] > 0 and not any(tmp_path.glob("text-*"))


def test_unfrozen_encoders_are_never_cached(demo_tree, tmp_path):
    """An encoder that is not frozen is never cached: it learns, so its outputs change."""
    from mmemo.training.trainer import Trainer

    trainer = Trainer(tiny_config(demo_tree, ("text",), data__cache_dir=str(tmp_path), data__max_examples=4),
                      run_dir=tmp_path / "run")
    assert type(trainer.processors["text"]).__name__ == "TextProcessor" and not any(tmp_path.glob("text-*"))
