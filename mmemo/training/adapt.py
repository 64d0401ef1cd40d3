"""Task-adaptive pretraining (Gururangan et al., ACL 2020): masked-language-model training of the text
encoder on the training split's own text, as the encoder will read it (dialogue context, speaker names),
before it is fine-tuned. It writes a checkpoint folder that ``model.encoders.text.checkpoint`` can name.

Only the training split's text is trained on: the model never sees dev and test text, so selection on dev
stays honest.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import Config, ConfigError
from mmemo.data.loading import load_splits
from mmemo.errors import MediaError
from mmemo.models.encoders.hf import resolve_checkpoint
from mmemo.models.encoders.text import TextProcessor
from mmemo.training.sampling import bucketed_order

log = logging.getLogger("mmemo")


@dataclass
class AdaptResult:
    out_dir: Path
    source: str
    examples: int
    epochs: int
    steps: int
    loss_by_epoch: list[float] = field(default_factory=list)
    time_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of this process (all its threads): wall time depends on what else runs


def _head_of(model: nn.Module) -> nn.Module | None:
    """The masked-LM head, when it is the one module beside the base model (BERT's ``cls``, RoBERTa's
    ``lm_head``): then only the masked positions need the vocabulary projection. Over every position it made
    a MiniLM-L6 step 1.8x slower (1.27 s against 0.70 s for 32 x 56 tokens, forward and backward, 2 threads)."""
    others = [m for name, m in model.named_children() if name != model.base_model_prefix]
    return others[0] if len(others) == 1 else None


def save_encoder(state: dict[str, torch.Tensor], source: str, out: Path) -> None:
    """The adapted weights in the source checkpoint's own architecture (``AutoModel``), which keeps
    the parts masked-LM training does not touch, such as BERT's pooler: a drop-in replacement for it."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(source)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or any("pooler" not in k for k in missing):
        raise RuntimeError(f"adapted weights do not fit {source}: missing {missing}, unexpected {unexpected}")
    encoder.save_pretrained(out)


def adapt_text_encoder(config: Config, out_dir: str | Path, epochs: int = 1, lr: float = 5e-5,
                       head_lr: float = 1e-3, batch_size: int = 32, mask_prob: float = 0.15,
                       warmup_ratio: float = 0.1, seed: int = 0, progress: bool = True) -> AdaptResult:
    """Masked-LM training of ``config``'s text encoder on its training split; the adapted encoder and its
    tokenizer are saved in ``out_dir`` with ``adapt.json`` (what was done, the loss by epoch).

    A checkpoint without a masked-LM head (a sentence-transformers model) gets a new one, trained at
    ``head_lr`` while the encoder trains at ``lr``.
    """
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, get_scheduler


    if "text" not in config.model.modalities or "text" not in config.model.encoders:
        raise ConfigError("mmemo adapt: the config has no text encoder (model.encoders.text)")
    text_config = config.model.encoders["text"]
    if text_config.name != "hf_text":
        raise ConfigError(f"mmemo adapt: model.encoders.text.name is {text_config.name!r}; only hf_text is adapted")
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"mmemo adapt: --mask-prob must be in (0, 1), got {mask_prob}")
    if not text_config.pretrained:
        raise ConfigError("mmemo adapt: model.encoders.text.pretrained is false; adaptation continues pretrained weights")
    if epochs < 1:
        raise ConfigError(f"mmemo adapt: --epochs must be at least 1, got {epochs}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"mmemo adapt: {out} already exists and is not empty; choose another --out or remove it")
    torch.manual_seed(seed)
    splits, _ = load_splits(config)
    processor = TextProcessor(text_config, config.data)
    ids = []
    for ex in splits["train"]:
        try:
            item = processor(ex)
        except MediaError:  # an empty utterance: nothing to learn from
            continue
        if item is not None:
            ids.append(item["input_ids"].tolist())
    if not ids:
        raise ConfigError("mmemo adapt: the training split has no text")

    source = resolve_checkpoint(text_config.checkpoint)
    model = AutoModelForMaskedLM.from_pretrained(source, **text_config.model_overrides)
    model.train()
    head = _head_of(model)
    base = model.base_model
    base_params = list(base.parameters())
    in_base = {id(p) for p in base_params}
    # The decoder is tied to the input embeddings, which belong to the base model and train at its rate.
    head_params = [p for p in model.parameters() if id(p) not in in_base]
    optimizer = torch.optim.AdamW([{"params": base_params, "lr": lr}, {"params": head_params, "lr": head_lr}],
                                  weight_decay=0.01)
    steps_per_epoch = math.ceil(len(ids) / batch_size)
    total = steps_per_epoch * epochs
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(warmup_ratio * total), num_training_steps=total)
    collator = DataCollatorForLanguageModeling(processor.tokenizer, mlm_probability=mask_prob, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    lengths = [len(x) for x in ids]

    from tqdm.auto import tqdm

    start, cpu_start, losses, step = time.time(), time.process_time(), [], 0
    for epoch in range(epochs):
        order = bucketed_order(lengths, batch_size, generator)
        total_loss, batches = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), desc=f"adapt {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for i in bar:
            batch = collator([{"input_ids": ids[j]} for j in order[i:i + batch_size]])
            labels = batch["labels"]
            if head is not None:
                hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                picked = labels != -100
                loss = F.cross_entropy(head(hidden[picked]), labels[picked])
            else:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total_loss, batches, step = total_loss + loss.item(), batches + 1, step + 1
            bar.set_postfix(loss=f"{total_loss / batches:.3f}")
        losses.append(round(total_loss / batches, 4))
        log.info("adapt epoch %d/%d: masked-LM loss %.3f", epoch + 1, epochs, losses[-1])

    # Written beside the target and renamed into place: an interrupted save leaves no half checkpoint.
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_encoder(base.state_dict(), source, tmp)
    processor.tokenizer.save_pretrained(tmp)
    result = AdaptResult(out, text_config.checkpoint, len(ids), epochs, step, losses, round(time.time() - start, 1),
                         round(time.process_time() - cpu_start, 1))
    record = {**asdict(result), "out_dir": str(out), "lr": lr, "head_lr": head_lr, "batch_size": batch_size,
              "mask_prob": mask_prob, "warmup_ratio": warmup_ratio, "seed": seed,
              "data": {"source": config.data.source, "root": config.data.root, "split": "train"},
              "text_encoder": asdict(text_config)}
    (tmp / "adapt.json").write_text(json.dumps(record, indent=1, default=str))
    if out.exists():
        out.rmdir()  # empty, as checked before training
    tmp.rename(out)
    return result
