"""Text: any BERT/RoBERTa/MiniLM checkpoint through transformers, with optional dialogue context.

The target utterance is marked in ``target_mask``; the pooled embedding averages only its tokens, so
context informs the representation without diluting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmemo.config import DataConfig, EncoderConfig
from mmemo.data.examples import Example, Turn
from mmemo.data.text import is_valid_unicode
from mmemo.errors import MediaError
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor, masked_mean, pad_stack
from mmemo.models.encoders.hf import load_hf_model, resolve_checkpoint
from mmemo.registry import register_encoder


@dataclass
class HFTextConfig(EncoderConfig):
    name: str = "hf_text"
    checkpoint: str = "sentence-transformers/all-MiniLM-L6-v2"  # a hub id or a local folder (BERT, RoBERTa, MiniLM...)
    pretrained: bool = True  # false: random initialisation from the checkpoint's config
    model_overrides: dict[str, Any] = field(default_factory=dict)  # AutoConfig overrides (tiny test models)
    pooling: Literal["mean", "cls"] = "mean"  # mean: of the target utterance's tokens; cls: the [CLS] token
    # > 1: pool the mean of the last this many layers' hidden states (COSMIC, Ghosal et al. 2020, averages
    # RoBERTa's last four): lower layers keep more of the words themselves, and get a short gradient path
    pool_layers: int = 1
    max_length: int = 128  # tokens of the utterance and its context; longer inputs are cut
    context_turns: int = 0  # previous utterances of the same dialogue
    future_turns: int = 0  # following utterances (only where the application has them)
    speaker_names: bool = True  # prefix each turn with "Speaker: " (with context)
    freeze_token_embeddings: bool = False  # keep the pretrained vocabulary matrix out of the optimiser (faster epochs)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more time


class TextProcessor(Processor):
    """Tokenises ``[CLS] past turns [SEP] target [SEP] future turns [SEP]`` and marks the target."""

    modality = "text"

    def __init__(self, config: HFTextConfig, data: DataConfig | None = None, base_dir: str | Path | None = None):
        from transformers import AutoTokenizer

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(config.checkpoint, base_dir))
        tok = self.tokenizer
        self.bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def _format(self, turn: Turn) -> str:
        if self.config.speaker_names and turn.speaker and (self.config.context_turns or self.config.future_turns):
            return f"{turn.speaker}: {turn.text}"
        return turn.text

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str, speaker: str | None = None, before: tuple[Turn, ...] = (), after: tuple[Turn, ...] = ()) -> dict[str, torch.Tensor]:
        budget = self.config.max_length - 2 - (1 if before else 0) - (1 if after else 0)
        target = self._ids(self._format(Turn(speaker, text)))[: max(1, budget)]
        budget -= len(target)
        past: list[int] = []
        for turn in reversed(before):  # most recent first, until the budget is spent
            join = 1 if past else 0  # the [SEP] between this turn and the later ones counts too
            if budget - join <= 0:
                break
            ids = self._ids(self._format(turn))[-(budget - join):]
            past = ids + ([self.sep] if past else []) + past
            budget -= len(ids) + join
        future: list[int] = []
        for turn in after:
            join = 1 if future else 0
            if budget - join <= 0:
                break
            ids = self._ids(self._format(turn))[: budget - join]
            future = future + ([self.sep] if future else []) + ids
            budget -= len(ids) + join
        ids = [self.bos]
        if past:
            ids += past + [self.sep]
        start = len(ids)
        ids += target
        end = len(ids)
        ids += [self.sep]
        if future:
            ids += future + [self.sep]
        ids = ids[: self.config.max_length]
        target_mask = torch.zeros(len(ids), dtype=torch.bool)
        target_mask[start:min(end, len(ids))] = True
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "target_mask": target_mask}

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        """Token ids of the utterance in its context; None without text. An empty utterance, or text that is
        not valid Unicode (a lone surrogate, as undecodable bytes on a command line become), is unusable
        input: a ``MediaError``, counted in the media report in training and a warning in ``predict``."""
        if example.text is None:
            return None
        if not example.text.strip():
            raise MediaError("text", "empty text")
        for what, value in (("text", example.text), ("speaker", example.speaker),
                            *((f"context turn {i + 1}", t.text) for i, t in enumerate(example.context_before)),
                            *((f"following turn {i + 1}", t.text) for i, t in enumerate(example.context_after))):
            if value is not None and not is_valid_unicode(value):
                raise MediaError("text", "not valid Unicode", f"the {what} holds a lone surrogate; text must be a str "
                                 "of valid Unicode")
        return self.encode(example.text, example.speaker, example.context_before, example.context_after)

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_stack([it["input_ids"] for it in items], self.pad)
        target_mask, _ = pad_stack([it["target_mask"] for it in items], False)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "target_mask": target_mask}


@register_encoder("hf_text", config=HFTextConfig, modality="text")
class HFTextEncoder(Encoder):
    """A transformers text model (BERT, RoBERTa, MiniLM...) by hub id or local folder."""

    modality = "text"
    processor_class = TextProcessor

    def __init__(self, config: HFTextConfig, base_dir: str | Path | None = None):
        super().__init__(config, base_dir)
        self.model = load_hf_model(config.checkpoint, None, config.pretrained, config.model_overrides, base_dir)
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if config.freeze_token_embeddings:
            # The token matrix is about half of a small model's weights; a few epochs on a small corpus move
            # only the rows of the words it contains, away from the unseen ones they were pretrained beside.
            self.model.get_input_embeddings().weight.requires_grad_(False)
        self.dim = self.model.config.hidden_size
        layers = self.model.config.num_hidden_layers
        if not 1 <= config.pool_layers <= layers:
            raise ValueError(f"model.encoders.text.pool_layers must be in [1, {layers}] for {config.checkpoint} "
                             f"({layers} layers), got {config.pool_layers}")

    @classmethod
    def build_processor(cls, config: HFTextConfig, data: DataConfig | None, base_dir=None) -> TextProcessor:
        return TextProcessor(config, data, base_dir)

    def backbone(self) -> nn.Module:
        return self.model

    def token_embeddings(self) -> nn.Parameter | None:
        weight = self.model.get_input_embeddings().weight
        return weight if weight.requires_grad else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor | None = None) -> ModalityEmbedding:
        mask = attention_mask.bool()
        n = self.config.pool_layers
        out = self.model(input_ids=input_ids, attention_mask=attention_mask.long(), output_hidden_states=n > 1)
        hidden = out.last_hidden_state if n == 1 else torch.stack(out.hidden_states[-n:]).mean(0)
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = masked_mean(hidden, target_mask if target_mask is not None else mask)
        return ModalityEmbedding(hidden, mask, pooled)

    def parameter_groups(self, lr: float, encoder_lr: float, layer_decay: float = 1.0) -> list[dict]:
        """Layer-wise learning-rate decay: layer i of L trains at ``encoder_lr * layer_decay**(L - i)``."""
        if layer_decay >= 1.0:
            return super().parameter_groups(lr, encoder_lr, layer_decay)
        num_layers = self.model.config.num_hidden_layers
        buckets: dict[int, list[nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            depth = num_layers  # pooler and anything above the last layer
            if "embeddings" in name:
                depth = 0
            else:
                parts = name.split(".")
                for i, part in enumerate(parts[:-1]):
                    if part in ("layer", "layers") and parts[i + 1].isdigit():
                        depth = int(parts[i + 1]) + 1
                        break
            buckets.setdefault(depth, []).append(p)
        groups = [
            {"params": ps, "lr": encoder_lr * layer_decay ** (num_layers - d), "name": f"text.layer{d}"}
            for d, ps in sorted(buckets.items())
        ]
        head = list(self.head_parameters())
        if head:
            groups.append({"params": head, "lr": lr, "name": "text.head"})
        return groups

    def save_assets(self, directory: Path, relative: str) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(directory)
        TextProcessor(self.config, base_dir=self.base_dir).tokenizer.save_pretrained(directory)
        return {"checkpoint": relative, "pretrained": False, "model_overrides": {}}
