"""Fusion methods on synthetic embeddings (every subset of modalities, absent-modality invariance,
learning a label that needs two modalities), and what surrounds fusion: the fusions inside
EmotionModel with real tiny encoders, modality dropout, vision temporal pooling, ``mmemo models``."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mmemo.cli import main as cli_main
from mmemo.config import ConfigError, load_config
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.encoders.vision import TemporalPooling
from mmemo.models.fusion.base import Fusion
from mmemo.models.fusion.sequence import key_padding_mask
from mmemo.models.model import EmotionModel, drop_modalities
from mmemo.registry import FUSIONS, create_fusion
from tests.conftest import tiny_config

MODALITIES = ("text", "audio", "vision")
DIMS = {"text": 16, "audio": 12, "vision": 8}
LENGTHS = {"text": 5, "audio": 7, "vision": 3}  # unaligned, as real token/frame sequences are
SUBSETS = [s for r in range(1, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, r)]
FUSION_NAMES = FUSIONS.names()
WIDTH = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, and on a busy
    machine it makes the training loops below an order of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_fusion(name: str, modalities: tuple[str, ...] = MODALITIES, dropout: float = 0.0) -> tuple[Fusion, nn.Linear]:
    """A small instance of a registered fusion with its defaults, plus a linear head."""
    config = FUSIONS.get(name).config_class(name=name, dim=WIDTH, dropout=dropout)
    if hasattr(config, "heads"):
        config.heads = 2
    torch.manual_seed(0)
    fusion = create_fusion(config, input_dims={m: DIMS[m] for m in modalities}, modalities=list(modalities))
    return fusion, nn.Linear(fusion.dim, 2)


def sequences(batch: int, generator: torch.Generator, signal: dict[str, torch.Tensor] | None = None) -> dict[str, ModalityEmbedding]:
    """Random token sequences of random lengths (padding zeroed), optionally plus a per-example signal
    vector on every real token; ``pooled`` is the masked mean, as the encoders compute it."""
    out = {}
    for m in MODALITIES:
        lengths = torch.randint(1, LENGTHS[m] + 1, (batch,), generator=generator)
        mask = torch.arange(LENGTHS[m])[None, :] < lengths[:, None]
        seq = torch.randn(batch, LENGTHS[m], DIMS[m], generator=generator) * 0.5
        if signal is not None and m in signal:
            seq = seq + signal[m][:, None, :]
        seq = seq * mask[..., None]
        out[m] = ModalityEmbedding(seq, mask, seq.sum(1) / lengths[:, None])
    return out


def presence(batch: int, subset: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([[m in subset for m in MODALITIES]] * batch)


def with_garbage_where_absent(emb: dict[str, ModalityEmbedding], present: torch.Tensor, generator: torch.Generator) -> dict[str, ModalityEmbedding]:
    """The same embeddings with every absent row replaced: huge random tokens, a random mask, NaN pooled."""
    out = {}
    for i, m in enumerate(MODALITIES):
        e, absent = emb[m], ~present[:, i]
        seq = torch.where(absent[:, None, None], torch.randn(e.seq.shape, generator=generator) * 1e4, e.seq)
        mask = torch.where(absent[:, None], torch.rand(e.mask.shape, generator=generator) < 0.5, e.mask)
        pooled = torch.where(absent[:, None], torch.full_like(e.pooled, float("nan")), e.pooled)
        out[m] = ModalityEmbedding(seq, mask, pooled)
    return out


def reads_only(param_name: str, modality: str) -> bool:
    """Whether a parameter belongs to a per-modality submodule (``proj.audio.0.weight``), not counting
    the learned stand-ins for a missing modality, which are meant to get gradients when it is absent."""
    parts = param_name.split(".")
    return modality in parts[:-1] and parts[0] != "missing"


# --------------------------------------------------------------------------------------------------
# The contract, for every registered fusion
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_forward_and_backward_with_every_subset_of_modalities(name):
    fusion, head = small_fusion(name)
    emb = sequences(6, torch.Generator().manual_seed(0))
    for subset in SUBSETS:
        fusion.zero_grad()
        fused = fusion(emb, presence(6, subset))
        assert fused.shape == (6, fusion.dim) and torch.isfinite(fused).all(), subset
        head(fused).logsumexp(-1).sum().backward()
        grads = {n: p.grad for n, p in fusion.named_parameters()}
        assert all(g is None or torch.isfinite(g).all() for g in grads.values()), subset
        for m in MODALITIES:
            if name == "probe":  # no layers at all: each modality's pooled embedding goes to the head as it is
                columns = probe_columns(fusion, m)
                assert torch.equal(fused[:, columns], emb[m].pooled if m in subset else fusion.missing[m].expand(6, -1))
                continue
            own = [g for n, g in grads.items() if reads_only(n, m)]
            assert own, f"{name} has no parameters of its own for {m}"
            learning = any(g is not None and bool(g.abs().sum() > 0) for g in own)
            assert learning == (m in subset), f"{name}, present {subset}: parameters of {m} learning={learning}"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", FUSION_NAMES)
def test_absent_rows_cannot_change_logits_or_gradients(name, mode):
    fusion, head = small_fusion(name, dropout=0.2)
    fusion.train(mode == "train")
    gen = torch.Generator().manual_seed(1)
    batch = 4 * len(SUBSETS)
    emb = sequences(batch, gen)
    present = torch.cat([presence(4, s) for s in SUBSETS])  # every subset, so single-modality rows too
    garbled = with_garbage_where_absent(emb, present, gen)

    def run(e):
        fusion.zero_grad()
        torch.manual_seed(5)  # the same dropout masks for both runs
        logits = head(fusion(e, present))
        logits.logsumexp(-1).sum().backward()
        return logits.detach(), [p.grad.clone() for p in fusion.parameters() if p.grad is not None]

    logits, grads = run(emb)
    logits_garbled, grads_garbled = run(garbled)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, logits_garbled)
    assert len(grads) == len(grads_garbled) and all(torch.equal(a, b) for a, b in zip(grads, grads_garbled))
    if mode == "eval":  # inference under no_grad takes torch's fast attention paths
        with torch.no_grad():
            assert torch.equal(head(fusion(emb, present)), head(fusion(garbled, present)))


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_fusion_works_in_a_model_of_one_or_two_modalities(name):
    gen = torch.Generator().manual_seed(2)
    for modalities in (("audio",), ("text", "vision")):
        fusion, head = small_fusion(name, modalities)
        emb = {m: e for m, e in sequences(3, gen).items() if m in modalities}
        logits = head(fusion(emb, torch.ones(3, len(modalities), dtype=torch.bool)))
        assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_attention_masks_never_leave_a_row_without_keys():
    valid = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    ignore = key_padding_mask(valid)
    assert (~ignore).any(1).all()  # softmax over no key would be NaN on some kernels and torch versions
    assert ignore[[0, 2]].equal(~valid[[0, 2]]) and ignore[1].tolist() == [False, True, True]


# --------------------------------------------------------------------------------------------------
# Learning a label that needs two modalities
# --------------------------------------------------------------------------------------------------


def joint_task(kind: str, batch: int, gen: torch.Generator, prototypes: dict[str, torch.Tensor]):
    """Text and audio each carry a digit k (a prototype vector on every token); vision is noise.

    ``threshold``: label = [k_text + k_audio >= 3], k in 0..3. Either modality alone is right at most
    75% of the time; the two together decide it, additively. ``xor``: label = k_text XOR k_audio,
    k in 0..1. Either modality alone is at chance (50%); it needs an interaction of the two.
    """
    levels = 4 if kind == "threshold" else 2
    k = torch.randint(0, levels, (2, batch), generator=gen)
    labels = (k.sum(0) >= 3).long() if kind == "threshold" else k[0] ^ k[1]
    emb = sequences(batch, gen, {"text": prototypes["text"][k[0]], "audio": prototypes["audio"][k[1]]})
    return emb, torch.ones(batch, len(MODALITIES), dtype=torch.bool), labels


def train_on_joint_task(name: str, kind: str, steps: int = 300) -> float:
    """Held-out accuracy of fusion + head after ``steps`` Adam steps on fresh batches of 32."""
    fusion, head = small_fusion(name)
    gen = torch.Generator().manual_seed(3)
    prototypes = {m: torch.randn(4, DIMS[m], generator=gen) for m in MODALITIES}
    params = list(fusion.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(steps):
        emb, present, labels = joint_task(kind, 32, gen, prototypes)
        loss = nn.functional.cross_entropy(head(fusion(emb, present)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fusion.eval()
    with torch.no_grad():
        emb, present, labels = joint_task(kind, 1000, gen, prototypes)
        return (head(fusion(emb, present)).argmax(-1) == labels).float().mean().item()


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_learns_a_label_that_needs_two_modalities(name):
    accuracy = train_on_joint_task(name, "threshold")
    assert accuracy >= 0.9, f"{name}: {accuracy:.3f} (one modality alone: at most 0.75)"


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_xor_of_two_modalities_needs_interactions(name):
    """Every method but late fusion models cross-modal interactions; late fusion adds per-modality
    logits, so it stays at chance here, which is what makes it a distinct baseline."""
    accuracy = train_on_joint_task(name, "xor")
    if name in ("late", "probe"):
        assert accuracy < 0.65, f"{name} fusion is additive in logits, yet reached {accuracy:.3f} on XOR"
    else:
        assert accuracy >= 0.9, f"{name}: {accuracy:.3f} (chance: 0.5)"


def probe_columns(fusion, modality: str) -> slice:
    start = sum(fusion.input_dims[m] for m in fusion.modalities[:fusion.modalities.index(modality)])
    return slice(start, start + fusion.input_dims[modality])


def test_probe_fusion_makes_the_model_a_linear_classifier_of_the_pooled_embeddings():
    fusion, head = small_fusion("probe")
    assert fusion.dim == sum(DIMS.values())
    emb = sequences(5, torch.Generator().manual_seed(4))
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        for vector in fusion.missing.values():
            vector.normal_()

        def logits(scale: float) -> torch.Tensor:
            scaled = {m: ModalityEmbedding(e.seq * scale, e.mask, e.pooled * scale) for m, e in emb.items()}
            return head(fusion(scaled, present))

        # affine in the pooled embeddings, whatever the learned stand-ins: equal steps, equal changes
        torch.testing.assert_close(logits(3.0) - logits(1.0), 2 * (logits(2.0) - logits(1.0)))
        assert not torch.allclose(logits(2.0), logits(1.0))
        absent = ~present[:, 1]  # an absent modality's rows are its learned vector, whatever the input
        torch.testing.assert_close(fusion(emb, present)[absent][:, probe_columns(fusion, "audio")],
                                   fusion.missing["audio"].expand(int(absent.sum()), -1))


def test_late_fusion_is_the_weighted_mean_of_per_modality_logits():
    fusion, head = small_fusion("late")
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    fusion.eval()
    emb = sequences(5, torch.Generator().manual_seed(4))
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        logits = head(fusion(emb, present))
        per_modality = torch.stack([head(fusion.act(fusion.proj[m](emb[m].pooled))) for m in MODALITIES], dim=1)
        weights = torch.where(present, fusion.weight_logits.exp(), torch.zeros(()))
        expected = (weights[..., None] * per_modality).sum(1) / weights.sum(1, keepdim=True)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(logits[2], per_modality[2, 1])  # one modality present: its own logits


# --------------------------------------------------------------------------------------------------
# Config and listing
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_config_selects_each_fusion(name):
    config = load_config(None, [f"model.fusion.name={name}", "model.fusion.dim=64"])
    assert type(config.model.fusion) is FUSIONS.get(name).config_class and config.model.fusion.dim == 64


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.fusion.name=cross_attention", "model.fusion.dim=30", "model.fusion.heads=4"], "model.fusion.heads"),
        (["model.fusion.name=bottleneck", "model.fusion.layers=2", "model.fusion.fusion_layer=1"], "model.fusion.fusion_layer"),
        (["model.fusion.name=low_rank", "model.fusion.rank=0"], "model.fusion.rank"),
        (["model.fusion.name=tensor", "model.fusion.heads=2"], "model.fusion.heads"),
    ],
)
def test_bad_fusion_fields_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_models_command_lists_every_fusion_with_a_description(capsys):
    assert cli_main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("fusions:") + 1
    fusions = lines[start:next(i for i in range(start, len(lines)) if not lines[i].startswith(" "))]
    listed = {line.split()[0]: line.split(None, 1)[1] for line in fusions}
    assert set(listed) == set(FUSION_NAMES) >= {"concat", "late", "gated", "tensor", "low_rank", "cross_attention", "bottleneck", "probe"}
    assert all(len(description) > 20 for description in listed.values())


# --------------------------------------------------------------------------------------------------
# Inside EmotionModel, with real tiny encoders
# --------------------------------------------------------------------------------------------------


def encoder_inputs(batch: int, present: torch.Tensor, modalities: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    """Collated inputs for the examples that have each modality (as the dataset's collate gives them)."""
    gen = torch.Generator().manual_seed(6)
    inputs = {}
    for i, m in enumerate(modalities):
        n = int(present[:, i].sum())
        if m == "text":
            ids = torch.randint(1000, 2000, (n, 9), generator=gen)
            mask = torch.arange(9)[None, :] < torch.randint(3, 10, (n,), generator=gen)[:, None]
            inputs[m] = {"input_ids": ids, "attention_mask": mask, "target_mask": mask}
        elif m == "audio":
            mask = torch.arange(120)[None, :] < torch.randint(40, 121, (n,), generator=gen)[:, None]
            inputs[m] = {"features": torch.randn(n, 120, 32, generator=gen) * mask[..., None], "mask": mask}
        else:
            mask = torch.arange(3)[None, :] < torch.randint(1, 4, (n,), generator=gen)[:, None]
            inputs[m] = {"frames": torch.randint(0, 256, (n, 3, 3, 32, 32), generator=gen, dtype=torch.uint8), "frame_mask": mask}
    return inputs


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_every_fusion_trains_in_the_model_on_real_encoder_sequences(name):
    modalities = ("text", "audio", "vision")
    config = tiny_config(None, modalities, model__fusion={"name": name, "dim": 32, "heads": 2} if name in
                         ("cross_attention", "bottleneck") else {"name": name, "dim": 32})
    torch.manual_seed(0)
    model = EmotionModel(config.model, num_labels=3)
    present = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    out = model(encoder_inputs(4, present, modalities), present, labels=torch.tensor([0, 1, 2, 0]))
    for m, e in out.embeddings.items():  # encoders give token sequences with masks, absent rows masked out
        assert e.seq.shape[:2] == e.mask.shape and e.seq.shape[1] > 1
        assert not e.mask[~present[:, modalities.index(m)]].any()
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.fusion.parameters())


# --------------------------------------------------------------------------------------------------
# Modality dropout
# --------------------------------------------------------------------------------------------------


def test_modality_dropout_never_empties_an_example():
    gen = torch.Generator().manual_seed(7)
    present = torch.rand(4000, 3, generator=gen) < 0.6  # includes examples with no modality at all
    kept = drop_modalities(present, torch.tensor([0.9, 0.9, 0.9]), generator=gen)
    had_any = present.any(1)
    assert kept[had_any].any(1).all()  # nobody who had a modality loses all of them
    assert not kept[~had_any].any()  # and nothing absent becomes present
    assert not (kept & ~present).any()
    full = present.all(1)
    assert kept[full].sum(1).float().mean() < 1.5  # it does drop: 3 present at p=0.9 keep ~1 on average


def test_modality_dropout_is_per_modality_and_only_in_training():
    config = tiny_config(None, ("audio", "vision"), model__fusion={"name": "gated", "dim": 32, "modality_dropout": {"audio": 0.5}})
    model = EmotionModel(config.model, num_labels=3)
    assert model.modality_dropout.tolist() == pytest.approx([0.5, 0.0])
    present = torch.ones(16, 2, dtype=torch.bool)
    inputs = encoder_inputs(16, present, ("audio", "vision"))
    torch.manual_seed(8)
    trained = model.train()(inputs, present).present
    assert trained[:, 1].all() and 0 < int((~trained[:, 0]).sum()) < 16
    assert model.eval()(inputs, present).present.equal(present)


# --------------------------------------------------------------------------------------------------
# Vision temporal pooling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mean", "attention", "transformer"])
def test_temporal_pooling_ignores_padded_frames(kind):
    torch.manual_seed(0)
    pooling = TemporalPooling(kind, 16, heads=4)
    frames = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    other = torch.where(mask[..., None], frames, torch.randn(3, 5, 16) * 100)
    for train in (True, False):
        pooling.train(train)
        torch.manual_seed(1)
        pooled = pooling(frames, mask)[1]
        torch.manual_seed(1)
        assert torch.equal(pooled, pooling(other, mask)[1])
    if kind == "mean":
        torch.testing.assert_close(pooled[0], frames[0, :3].mean(0))
    else:  # a learned pooling, not the mean
        assert not torch.allclose(pooled[0], frames[0, :3].mean(0))
    torch.testing.assert_close(pooled[2], pooling(frames[2:, :1], mask[2:, :1])[1][0])  # one real frame


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_vision_encoder_uses_the_configured_temporal_pooling(kind):
    config = tiny_config(None, ("vision",), model__encoders__vision__temporal=kind)
    model = EmotionModel(config.model, num_labels=3)
    encoder = model.encoders["vision"]
    assert encoder.temporal.kind == kind
    inputs = encoder_inputs(3, torch.ones(3, 1, dtype=torch.bool), ("vision",))["vision"]
    padded = inputs["frames"].clone()
    padded[~inputs["frame_mask"]] = 255 - padded[~inputs["frame_mask"]]
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(**inputs).pooled, encoder(padded, inputs["frame_mask"]).pooled)
