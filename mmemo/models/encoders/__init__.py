"""Encoders, one file per family; each file holds its Processor, its Encoder and its config dataclass, and
registers the encoder (``@register_encoder``) when imported here."""

from mmemo.models.encoders import audio, opensmile, text, vision  # noqa: F401  (each module registers its encoders)
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor

__all__ = ["Encoder", "ModalityEmbedding", "Processor"]
