"""What the token-sequence fusions share: projection to a common width with positions, and masks.

Sequences of different modalities are unaligned (32 text tokens, 100 audio frames, 8 video frames);
each keeps its own length and mask. Attention over a row with no real key would give NaN, so such
rows keep one key and their attention output is discarded by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmemo.config import ConfigError, FusionConfig


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sine/cosine position encodings ``[length, dim]`` (Vaswani et al., 2017): any length works."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.to(dtype)


class TokenProjection(nn.Module):
    """An encoder's token sequence ``[B, T, D_m]`` -> ``[B, T, dim]``: linear, layer norm, positions."""

    def __init__(self, in_dim: int, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.proj(seq)
        return self.dropout(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype))


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` (True = ignore) for ``valid[B, T]``; a row without any valid key keeps its
    first key so attention stays finite. Callers must discard the attention output of such rows."""
    empty = ~valid.any(1)
    keep_first = torch.zeros_like(valid)
    keep_first[:, 0] = empty
    return ~(valid | keep_first)


def transformer_layer(dim: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    """A pre-norm transformer encoder layer (GELU, 4x feed-forward), batch first."""
    return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                      batch_first=True, norm_first=True)


@dataclass
class AttentionFusionConfig(FusionConfig):
    """Fields shared by the attention fusions; ``dim`` is their model width."""

    layers: int = 2
    heads: int = 4

    def validate(self, key: str) -> None:
        if self.layers < 1:
            raise ConfigError(f"{key}.layers: must be >= 1, got {self.layers}")
        if self.heads < 1 or self.dim % self.heads:
            raise ConfigError(f"{key}.heads: must be >= 1 and divide dim={self.dim}, got {self.heads}")
