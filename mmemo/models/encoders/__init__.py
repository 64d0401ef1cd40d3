"""Encoders, one file per modality; each file holds its Processor and its Encoder."""

from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor

__all__ = ["Encoder", "ModalityEmbedding", "Processor"]
