"""The attention of the sequence fusions (issue 47): packed attention against a reference, the layers
and whole fusions against the padded implementation they replace (same weights), the CPU kernel that
runs in training, and activation checkpointing."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from mmemo.config import ConfigError, load_config
from mmemo.models.encoders.base import ModalityEmbedding
from mmemo.models.fusion import attention
from mmemo.models.fusion.attention import MultiHeadAttention, Segments, TransformerLayer, attend, pack
from mmemo.models.fusion.sequence import key_padding_mask
from mmemo.registry import FUSIONS, create_fusion

SEQUENCE_FUSIONS = ["cross_attention", "bottleneck"]
DIMS = {"text": 16, "audio": 12, "vision": 8}
LENGTHS = {"text": 5, "audio": 7, "vision": 3}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_attention(q, k, v, valid, heads):
    """Textbook attention on padded ``[B, T, d]`` tensors: softmax(QK^T / sqrt(d_h)) V over valid keys."""
    b, tq, d = q.shape
    split = lambda x: x.view(b, x.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    weights = scores.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
    return (weights @ split(v)).transpose(1, 2).reshape(b, tq, d)


@pytest.mark.parametrize("per_example", [True, False])
def test_packed_attention_equals_a_reference_and_gives_zeros_without_keys(per_example):
    gen = torch.Generator().manual_seed(0)
    q_valid = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    k_valid = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    q, k, v = (torch.randn(4, t, 8, generator=gen) for t in (4, 5, 5))
    packed_q, _, q_seg = pack(q, q_valid)
    (packed_k, _, k_seg), (packed_v, _, _) = pack(k, k_valid), pack(v, k_valid)
    out = attend(packed_q, packed_k, packed_v, q_seg, k_seg, heads=2, per_example=per_example)
    expected = reference_attention(q, k, v, k_valid, heads=2)[q_valid]
    has_keys = k_valid.any(1)[q_valid.nonzero()[:, 0]]
    assert out.shape == expected.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[has_keys], expected[has_keys], rtol=0, atol=1e-5)
    assert torch.equal(out[~has_keys], torch.zeros_like(out[~has_keys]))  # example 1: queries, no key


def padded(packed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    out = packed.new_zeros(*valid.shape, packed.shape[-1])
    out[valid] = packed
    return out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layers_equal_torch_modules_loaded_with_their_weights(mode):
    """Same state dict (strict: the parameter names are nn.MultiheadAttention's and
    nn.TransformerEncoderLayer's, so models saved before the change load), same outputs on valid
    tokens within 1e-5 in float32, and same gradients."""
    torch.manual_seed(0)
    dim, heads = 16, 4
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    source_valid = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    x, source = torch.randn(3, 5, dim), torch.randn(3, 3, dim)
    (x_packed, _, seg), (s_packed, _, s_seg) = pack(x, valid), pack(source, source_valid)

    ours = TransformerLayer(dim, heads, dropout=0.0)
    theirs = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
    theirs.load_state_dict(ours.state_dict())
    ours.train(mode == "train"), theirs.train(mode == "train")
    out = ours(x_packed, seg)
    expected = theirs(x, src_key_padding_mask=~valid)[valid]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)

    attention = MultiHeadAttention(dim, heads)
    reference = nn.MultiheadAttention(dim, heads, batch_first=True)
    reference.load_state_dict(attention.state_dict())
    attention.train(mode == "train"), reference.train(mode == "train")
    out = padded(attention(x_packed, s_packed, seg, s_seg), valid)
    expected, _ = reference(x, source, source, key_padding_mask=key_padding_mask(source_valid), need_weights=False)
    has_keys = source_valid.any(1)
    torch.testing.assert_close(out[has_keys], torch.where(valid[..., None], expected, 0.0)[has_keys], rtol=0, atol=1e-5)
    assert torch.equal(out[~has_keys], torch.zeros_like(out[~has_keys]))  # no key: the block adds nothing


def load_baselines():
    """The fusions as they were before issue 47, kept as the baseline in scripts/bench/fusion.py."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "fusion.py"
    spec = importlib.util.spec_from_file_location("bench_fusion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BASELINES


def small(name: str, dropout: float = 0.0, **fields) -> nn.Module:
    config = FUSIONS.get(name).config_class(name=name, dim=16, heads=2, dropout=dropout, **fields)
    torch.manual_seed(0)
    return create_fusion(config, input_dims=DIMS, modalities=list(DIMS))


def sequences(batch: int, gen: torch.Generator, prefix: bool = True) -> dict[str, ModalityEmbedding]:
    """Random sequences; masks are padding at the end or (``prefix=False``) any pattern."""
    out = {}
    for m, length in LENGTHS.items():
        if prefix:
            mask = torch.arange(length)[None, :] < torch.randint(1, length + 1, (batch,), generator=gen)[:, None]
        else:
            mask = torch.rand(batch, length, generator=gen) < 0.6
        seq = torch.randn(batch, length, DIMS[m], generator=gen) * mask[..., None]
        out[m] = ModalityEmbedding(seq, mask, seq.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))
    return out


@pytest.mark.parametrize("path", ["per_example", "batched"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", SEQUENCE_FUSIONS)
def test_fusions_equal_the_padded_implementation_with_the_same_weights(name, mode, path, monkeypatch):
    if path == "batched":  # what runs on CUDA: one padded, masked call per layer
        monkeypatch.setattr(attention, "attend", functools.partial(attention.attend, per_example=False))
    new = small(name)
    old = load_baselines()[name](new.config, DIMS, list(DIMS))
    old.load_state_dict(new.state_dict())  # strict: saved models of the padded implementation load
    new.train(mode == "train"), old.train(mode == "train")
    gen = torch.Generator().manual_seed(1)
    subsets = [s for r in (1, 2, 3) for s in itertools.combinations(range(3), r)]
    present = torch.tensor([[i in s for i in range(3)] for s in subsets for _ in range(2)])
    emb = sequences(len(present), gen, prefix=False)  # includes present modalities with no valid token
    out_new, out_old = new(emb, present), old(emb, present)
    torch.testing.assert_close(out_new, out_old, rtol=0, atol=1e-5)
    out_new.square().sum().backward()
    out_old.square().sum().backward()
    for (key, a), b in zip(new.named_parameters(), old.parameters()):
        assert (a.grad is None) == (b.grad is None), key
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=key)


def kernels(fusion: nn.Module) -> set[str]:
    emb = sequences(4, torch.Generator().manual_seed(2))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fusion(emb, torch.ones(4, 3, dtype=torch.bool)).sum().backward()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


@pytest.mark.parametrize("path", ["per_example", "batched"])
@pytest.mark.parametrize("name", SEQUENCE_FUSIONS)
def test_training_on_cpu_runs_the_flash_kernel_unless_attention_weights_drop_out(name, path, monkeypatch):
    if path == "batched":  # padded, with a boolean key mask: the flash CPU kernel takes it too
        monkeypatch.setattr(attention, "attend", functools.partial(attention.attend, per_example=False))
    fast = small(name, dropout=0.1).train()  # dropout elsewhere than on attention weights is fine
    assert {"aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward"} <= kernels(fast)
    assert "aten::_scaled_dot_product_attention_math" not in kernels(fast)
    slow = small(name, attention_dropout=0.1).train()  # the fused CPU kernels have no dropout
    assert "aten::_scaled_dot_product_attention_math" in kernels(slow)


@pytest.mark.parametrize("name", SEQUENCE_FUSIONS)
def test_checkpointed_layers_give_the_same_outputs_and_gradients(name):
    # dropout on, attention weights included: recomputation must replay the same masks
    plain = small(name, dropout=0.3, attention_dropout=0.2)
    checkpointed = small(name, dropout=0.3, attention_dropout=0.2, checkpoint_layers=True)
    checkpointed.load_state_dict(plain.state_dict())
    emb = sequences(6, torch.Generator().manual_seed(3))
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    outputs, grads, saved = [], [], []
    for fusion in (plain, checkpointed):
        fusion.train()
        torch.manual_seed(4)
        kept: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, kept=kept: kept.append(t.numel()) or t, lambda t: t):
            out = fusion(emb, present)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad for p in fusion.parameters()])
        saved.append(sum(kept))
    assert torch.equal(*outputs) and outputs[0].std() > 0
    assert saved[1] < saved[0] / 2  # the layers' activations were not kept for backward
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(*grads))
    with torch.no_grad():  # inference never checkpoints
        checkpointed.eval()(emb, present)


def test_attention_options_in_the_config():
    config = load_config(None, ["model.fusion.name=bottleneck", "model.fusion.checkpoint_layers=true",
                                "model.fusion.attention_dropout=0.2"])
    assert config.model.fusion.checkpoint_layers is True and config.model.fusion.attention_dropout == 0.2
    with pytest.raises(ConfigError, match=r"model\.fusion\.attention_dropout"):
        load_config(None, ["model.fusion.name=cross_attention", "model.fusion.attention_dropout=1.5"])


def test_segments_place_every_example():
    seg = Segments((2, 0, 3))
    assert seg.offsets == (0, 2, 2) and seg.total == 5
    assert seg.example_of_rows(torch.device("cpu")).tolist() == [0, 0, 2, 2, 2]
    assert seg.position_of_rows(torch.device("cpu")).tolist() == [0, 1, 0, 1, 2]
