"""Multi-head attention over packed token sequences, through ``F.scaled_dot_product_attention``.

The sequence fusions see batches whose sequences have very different real lengths (about half of a
padded 500-frame video may be padding). They therefore keep every modality *packed*: the valid tokens
of all examples one after the other, ``[N, d]``, with the per-example counts in ``Segments``. Linear
layers, layer norms and feed-forwards then never compute a padding token, and attention sees each
example's own queries and keys:

- on CPU, one ``scaled_dot_product_attention`` call per example, without any mask, so PyTorch runs
  its fused flash kernel (``_scaled_dot_product_flash_attention_for_cpu``) on exactly the real
  tokens: no attention matrix is kept for backward and no padded key or query is computed;
- elsewhere (CUDA), one batched call on the sequences padded again, with a boolean key mask, which
  the memory-efficient kernel accepts, instead of one kernel launch per example.

An example with queries but no key (a present target whose source modality is absent) gets no
attention output at all: exact zeros, as if the attention block were not there.

Attention-weight dropout makes PyTorch fall back to its math kernel on CPU (the fused CPU kernels
have none), so it is a separate option, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Segments:
    """Where each example's rows lie in a packed ``[N, ...]`` tensor: example ``b`` owns
    ``counts[b]`` consecutive rows starting at ``offsets[b]``."""

    counts: tuple[int, ...]

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for c in self.counts:
            out.append(total)
            total += c
        return tuple(out)

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def batch(self) -> int:
        return len(self.counts)

    def example_of_rows(self, device: torch.device) -> torch.Tensor:
        """``[N]``: the example each packed row belongs to."""
        return torch.repeat_interleave(torch.arange(self.batch, device=device),
                                       torch.tensor(self.counts, device=device), output_size=self.total)

    def position_of_rows(self, device: torch.device) -> torch.Tensor:
        """``[N]``: each packed row's index within its example's segment."""
        rows = self.example_of_rows(device)
        return torch.arange(self.total, device=device) - torch.tensor(self.offsets, device=device)[rows]


def pack(seq: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Segments]:
    """The valid tokens of ``seq[B, T, ...]`` (``valid[B, T]``, any pattern) example after example,
    with each one's position in its padded sequence and the segments."""
    examples, positions = valid.nonzero(as_tuple=True)
    return seq[examples, positions], positions, Segments(tuple(valid.sum(1).tolist()))


def segment_mean(x: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Mean of each example's rows of packed ``x[N, D]`` -> ``[B, D]``; an example without rows gives zeros."""
    rows = segments.example_of_rows(x.device)
    total = x.new_zeros(segments.batch, x.shape[-1]).index_add(0, rows, x)
    counts = torch.tensor(segments.counts, device=x.device, dtype=x.dtype).clamp_min(1.0)
    return total / counts[:, None]


@dataclass(frozen=True, eq=False)
class Concatenation:
    """Per example, the rows of several packed tensors one after the other (e.g. ``[CLS; tokens;
    bottleneck]``), and where each part's rows went, to take them back out after a layer."""

    segments: Segments
    gather: torch.Tensor  # row of the result -> row of torch.cat(parts)
    destinations: tuple[torch.Tensor, ...]  # for each part, its rows' indices in the result

    @staticmethod
    def of(parts: list[Segments], device: torch.device) -> Concatenation:
        batch = parts[0].batch
        counts = tuple(sum(p.counts[b] for p in parts) for b in range(batch))
        result = Segments(counts)
        out_offsets = torch.tensor(result.offsets, device=device)
        before = torch.zeros(batch, dtype=torch.long, device=device)  # rows of earlier parts, per example
        destinations = []
        for part in parts:
            rows = part.example_of_rows(device)
            destinations.append(out_offsets[rows] + before[rows] + part.position_of_rows(device))
            before = before + torch.tensor(part.counts, device=device)
        gather = torch.empty(result.total, dtype=torch.long, device=device)
        gather[torch.cat(destinations)] = torch.arange(result.total, device=device)
        return Concatenation(result, gather, tuple(destinations))

    def join(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The packed tensors of the parts, in the order given to ``of``, joined per example."""
        return torch.cat(tensors).index_select(0, self.gather)

    def take(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """The rows of part ``part`` of a joined tensor, packed again."""
        return x.index_select(0, self.destinations[part])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_segments: Segments, kv_segments: Segments,
           heads: int, dropout_p: float = 0.0, per_example: bool | None = None) -> torch.Tensor:
    """Scaled dot-product attention of packed queries ``q[Nq, d]`` to packed keys/values ``[Nk, d]``:
    each example's queries see only that example's keys. Rows of an example without keys are zeros.

    ``per_example`` (default: on CPU) runs one unmasked call per example rather than one padded,
    masked call for the batch; both give the same result.
    """
    if per_example is None:
        per_example = q.device.type == "cpu"
    if per_example:
        return _attend_per_example(q, k, v, q_segments, kv_segments, heads, dropout_p)
    return _attend_padded(q, k, v, q_segments, kv_segments, heads, dropout_p)


def _attend_per_example(q, k, v, q_segments: Segments, kv_segments: Segments, heads: int, dropout_p: float):
    d = q.shape[-1]
    outs = []
    for qb, kb, vb in zip(q.split(q_segments.counts), k.split(kv_segments.counts), v.split(kv_segments.counts)):
        n, m = qb.shape[0], kb.shape[0]
        if n == 0:
            continue
        if m == 0:
            outs.append(qb.new_zeros(n, d))
            continue
        # [n, d] -> [1, heads, n, d / heads] views; the kernel reads strided inputs
        o = F.scaled_dot_product_attention(qb.view(1, n, heads, -1).transpose(1, 2), kb.view(1, m, heads, -1).transpose(1, 2),
                                           vb.view(1, m, heads, -1).transpose(1, 2), dropout_p=dropout_p)
        outs.append(o.transpose(1, 2).reshape(n, d))
    return torch.cat(outs) if outs else q.new_zeros(0, d)


def _attend_padded(q, k, v, q_segments: Segments, kv_segments: Segments, heads: int, dropout_p: float):
    batch, d = q_segments.batch, q.shape[-1]
    tq, tk = max(q_segments.counts, default=0) or 1, max(kv_segments.counts, default=0) or 1

    def slots(segments: Segments, length: int) -> torch.Tensor:
        return segments.example_of_rows(q.device) * length + segments.position_of_rows(q.device)

    def padded(x: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
        return x.new_zeros(batch * length, d).index_copy(0, index, x).view(batch, length, heads, -1).transpose(1, 2)

    q_slots, kv_slots = slots(q_segments, tq), slots(kv_segments, tk)
    key_counts = torch.tensor(kv_segments.counts, device=q.device)
    valid = torch.arange(tk, device=q.device)[None, :] < key_counts[:, None]
    valid[:, 0] |= key_counts == 0  # a row without keys keeps one (finite), and is zeroed below
    o = F.scaled_dot_product_attention(padded(q, q_slots, tq), padded(k, kv_slots, tk), padded(v, kv_slots, tk),
                                       attn_mask=valid[:, None, None, :], dropout_p=dropout_p)
    out = o.transpose(1, 2).reshape(batch * tq, d).index_select(0, q_slots)
    if 0 in kv_segments.counts:
        out = torch.where((key_counts > 0)[q_segments.example_of_rows(q.device)][:, None], out, 0.0)
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention over packed sequences, with ``nn.MultiheadAttention``'s parameters (same
    names, shapes and initialisation), so models saved before the packed implementation still load.

    An example whose queries have no key gets exact zeros, output projection included.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, source: torch.Tensor | None, q_segments: Segments,
                source_segments: Segments | None = None) -> torch.Tensor:
        """``query[Nq, d]`` attends to ``source[Nk, d]`` (self-attention when ``source`` is None)."""
        d = query.shape[-1]
        if source is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            source_segments = q_segments
        else:
            q = F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d])
            k, v = F.linear(source, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)
        dropout = self.dropout if self.training else 0.0
        out = self.out_proj(attend(q, k, v, q_segments, source_segments, self.heads, dropout))
        if any(n and not m for n, m in zip(q_segments.counts, source_segments.counts)):
            has_keys = torch.tensor([m > 0 for m in source_segments.counts], device=out.device)
            out = torch.where(has_keys[q_segments.example_of_rows(out.device)][:, None], out, 0.0)
        return out


class TransformerLayer(nn.Module):
    """A pre-norm transformer encoder layer (GELU, 4x feed-forward) over packed sequences, with the
    parameter names of ``nn.TransformerEncoderLayer(norm_first=True)``, which it replaces."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, attention_dropout)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, segments: Segments) -> torch.Tensor:
        x = x + self.dropout1(self.self_attn(self.norm1(x), None, segments))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))
