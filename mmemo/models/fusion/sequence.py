"""What the token-sequence fusions share: projection to a common width with positions, masks, config.

Sequences of different modalities are unaligned (32 text tokens, 100 audio frames, 8 video frames);
each keeps its own length and mask. The fusions work on packed sequences (``attention.py``): only
the valid tokens, example after example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmemo.config import ConfigError, FusionConfig
from mmemo.models.fusion.attention import Segments, pack


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sine/cosine position encodings ``[length, dim]`` (Vaswani et al., 2017): any length works."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.to(dtype)


class TokenProjection(nn.Module):
    """An encoder's token sequence ``[B, T, D_m]`` -> its valid tokens packed, ``[N, dim]``: linear,
    layer norm, positions (of the padded sequence). Padding tokens are never projected."""

    def __init__(self, in_dim: int, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, seq: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, Segments]:
        tokens, positions, segments = pack(seq, valid)
        x = self.proj(tokens)
        table = sinusoidal_positions(seq.shape[1], x.shape[-1], x.device, x.dtype)
        return self.dropout(x + table[positions]), segments


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` (True = ignore) for ``valid[B, T]``; a row without any valid key keeps its
    first key so attention stays finite. Callers must discard the attention output of such rows."""
    empty = ~valid.any(1)
    keep_first = torch.zeros_like(valid)
    keep_first[:, 0] = empty
    return ~(valid | keep_first)


@dataclass
class AttentionFusionConfig(FusionConfig):
    """Fields shared by the attention fusions; ``dim`` is their model width."""

    layers: int = 2  # transformer layers (cross-modal blocks per direction, for cross_attention)
    heads: int = 4  # attention heads (dim must be divisible by it)
    # Dropout on the attention weights. Off by default: with it, PyTorch's fused attention kernels are
    # unavailable on CPU and the math kernel keeps every attention matrix for backward.
    attention_dropout: float = 0.0
    # Recompute each layer's activations during backward instead of storing them (activation
    # checkpointing): less memory for long sequences at the cost of one more forward pass per layer.
    checkpoint_layers: bool = False

    def validate(self, key: str) -> None:
        if self.layers < 1:
            raise ConfigError(f"{key}.layers: must be >= 1, got {self.layers}")
        if self.heads < 1 or self.dim % self.heads:
            raise ConfigError(f"{key}.heads: must be >= 1 and divide dim={self.dim}, got {self.heads}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"{key}.attention_dropout: must be in [0, 1), got {self.attention_dropout}")


def run_layer(layer: Callable[..., torch.Tensor], *args, recompute: bool) -> torch.Tensor:
    """``layer(*args)``, with its activations recomputed in backward when ``recompute`` (and autograd
    is recording); the dropout masks are replayed, so results and gradients are the same."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)
