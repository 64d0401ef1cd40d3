"""EmotionModel: encoders -> fusion -> one shared softmax head, and its saved-model format.

A saved model is a folder: ``config.yaml``, ``model.safetensors``, ``labels.json``,
``encoders/<modality>/`` (tokenizer, model configs), ``README.md``, its model card (``mmemo.models.card``) and, for
processors that learn from inputs, ``processors.safetensors`` (per-speaker statistics, ``mmemo.models.fitted``).
Loading never unpickles anything.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmemo.config import Config, ModelConfig, load_config
from mmemo.errors import CheckpointError, LabelError
from mmemo.labels import LabelSet, get_label_set
from mmemo.models.card import write_model_card
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor
from mmemo.models.fitted import FITTED_NAME, fitted_states, write_fitted
from mmemo.registry import ENCODERS, create_fusion

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"
LABELS_NAME = "labels.json"
PICKLED_NAMES = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth")  # loaded only on explicit opt-in


@dataclass
class EmotionModelOutput:
    logits: torch.Tensor  # [B, C]
    probs: torch.Tensor  # [B, C]
    loss: torch.Tensor | None = None
    embeddings: dict[str, ModalityEmbedding] = field(default_factory=dict)
    present: torch.Tensor | None = None  # [B, M] after modality dropout
    fused: torch.Tensor | None = None
    aux_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # [B, C_name] per model.aux_labels head


def drop_modalities(present: torch.Tensor, probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly mark modalities absent (per example, probability per modality), never all of them:
    an example that would lose every modality keeps one of its own, chosen at random."""
    rand = torch.rand(present.shape, generator=generator, device="cpu").to(present.device)
    kept = present & ~(rand < probs.to(present.device))
    emptied = (kept.sum(1) == 0) & (present.sum(1) > 0)
    if emptied.any():
        choice = torch.where(present, rand + 1.0, torch.zeros_like(rand)).argmax(1)
        rescue = F.one_hot(choice, present.shape[1]).bool() & emptied.unsqueeze(1)
        kept = kept | rescue
    return kept


class EmotionModel(nn.Module):
    """``seed``: each encoder's random initialisation then depends on (seed, modality) only, so the audio
    encoder of an audio-only run and of a text+audio run start identical (fair ablations, and a frozen
    encoder's cached embeddings serve every modality combination)."""

    def __init__(self, config: ModelConfig, num_labels: int, base_dir: str | Path | None = None, seed: int | None = None):
        super().__init__()
        self.config = config
        self.modalities = list(config.modalities)
        self.encoders = nn.ModuleDict({m: self._build_encoder(m, base_dir, seed) for m in self.modalities})
        for m, enc in self.encoders.items():
            if config.encoders[m].freeze:
                enc.freeze()
        self.fusion = create_fusion(config.fusion, input_dims={m: e.dim for m, e in self.encoders.items()}, modalities=self.modalities)
        self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(self.fusion.dim, num_labels))
        # Multi-task heads, read by the trainer's loss only: they shape the fused embedding in training.
        self.aux_heads = nn.ModuleDict({
            name: nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(self.fusion.dim, len(classes)))
            for name, classes in config.aux_labels.items()})
        mdo = config.fusion.modality_dropout
        probs = [mdo.get(m, 0.0) if isinstance(mdo, dict) else mdo for m in self.modalities]
        self.register_buffer("modality_dropout", torch.tensor(probs), persistent=False)

    def _build_encoder(self, modality: str, base_dir: str | Path | None, seed: int | None) -> Encoder:
        config = self.config.encoders[modality]
        build = ENCODERS.get(config.name).cls
        if seed is None:
            return build(config, base_dir=base_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(f"{seed}:{modality}".encode()))  # the CPU generator keeps 32 bits
            return build(config, base_dir=base_dir)

    @property
    def num_labels(self) -> int:
        return self.head[-1].out_features

    def encode(self, inputs: dict[str, dict[str, torch.Tensor] | ModalityEmbedding], present: torch.Tensor) -> dict[str, ModalityEmbedding]:
        """Run each encoder on the examples that have its modality only, then scatter to the batch.

        ``inputs[m]`` may already be the encoder's output (a ``ModalityEmbedding`` read from the embedding
        cache of a frozen encoder, ``mmemo.training.cache``); it is used as is."""
        batch_size = present.shape[0]
        out = {}
        for i, m in enumerate(self.modalities):
            rows = present[:, i].nonzero().squeeze(1)
            enc: Encoder = self.encoders[m]
            if m in inputs and rows.numel() > 0:
                if isinstance(inputs[m], ModalityEmbedding):
                    out[m] = inputs[m].scatter(rows, batch_size)
                    continue
                with torch.set_grad_enabled(torch.is_grad_enabled() and not enc.is_frozen):
                    out[m] = enc(**inputs[m]).scatter(rows, batch_size)
            else:
                dtype = next(self.head.parameters()).dtype
                out[m] = ModalityEmbedding.empty(batch_size, enc.dim, present.device, dtype)
        return out

    def classify(self, embeddings: dict[str, ModalityEmbedding], present: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings already computed: fusion and head only, so that the effect of marking a
        modality absent is measured without running any encoder again."""
        return self.head(self.fusion(embeddings, present.bool()))

    def forward(
        self,
        inputs: dict[str, dict[str, torch.Tensor]],
        present: torch.Tensor,
        labels: torch.Tensor | None = None,
        criterion: nn.Module | None = None,
    ) -> EmotionModelOutput:
        present = present.bool()
        embeddings = self.encode(inputs, present)
        if self.training and bool((self.modality_dropout > 0).any()):
            present = drop_modalities(present, self.modality_dropout)
        fused = self.fusion(embeddings, present)
        logits = self.head(fused)
        loss = None
        if labels is not None:
            loss = criterion(logits, labels) if criterion is not None else F.cross_entropy(logits, labels)
        aux_logits = {name: head(fused) for name, head in self.aux_heads.items()} if self.training else {}
        return EmotionModelOutput(logits, logits.float().softmax(-1), loss, embeddings, present, fused, aux_logits)

    def parameter_groups(self, lr: float, encoder_lr: float, layer_decay: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
        groups = []
        for enc in self.encoders.values():
            backbone_lr = enc.config.lr if enc.config.lr is not None else encoder_lr
            groups += enc.parameter_groups(lr, backbone_lr, layer_decay)
        rest = [p for p in [*self.fusion.parameters(), *self.head.parameters(), *self.aux_heads.parameters()]
                if p.requires_grad]
        groups.append({"params": rest, "lr": lr, "name": "fusion_head"})
        out = []
        for g in groups:  # no weight decay on biases and norms
            decay = [p for p in g["params"] if p.ndim > 1]
            no_decay = [p for p in g["params"] if p.ndim <= 1]
            if decay:
                out.append({**g, "params": decay, "weight_decay": weight_decay})
            if no_decay:
                out.append({**g, "params": no_decay, "weight_decay": 0.0, "name": g["name"] + ".no_decay"})
        return out

    # ---------------------------------------------------------------------------------------------
    # Saved-model format
    # ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, config: Config, label_set: LabelSet,
                        processors: Mapping[str, Processor] | None = None, card: dict | None = None) -> Path:
        """Write a self-contained model folder atomically (a temporary folder renamed into place), with its
        model card; ``card`` adds to what the config says (``metrics``: split -> metrics; see ``mmemo.models.card``).
        With ``processors``, what they learnt from inputs (per-speaker statistics) goes with it."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            saved = copy.deepcopy(config)
            for m, enc in self.encoders.items():
                updates = enc.save_assets(tmp / "encoders" / m, f"encoders/{m}")
                for key, value in updates.items():
                    setattr(saved.model.encoders[m], key, value)
            saved.data.labels = list(label_set.names)
            saved.save(tmp / CONFIG_NAME)
            (tmp / LABELS_NAME).write_text(json.dumps({"label_set": label_set.name, "labels": list(label_set.names)}, indent=2))
            save_model(self, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "library": "mmemo"})
            states = fitted_states(processors or {})
            if states:
                write_fitted(states, tmp / FITTED_NAME)
            write_model_card(tmp, config, label_set, card)
            replace_dir(tmp, directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, allow_pickle: bool = False) -> tuple[EmotionModel, Config, LabelSet]:
        """Rebuild a saved model; any file that is missing, damaged or does not fit the others is a
        ``CheckpointError`` (or ``ConfigError`` for config.yaml) naming it. Nothing is unpickled unless
        ``allow_pickle`` and the folder holds no safetensors weights."""
        directory = Path(directory)
        config = load_saved_config(directory)
        label_set = load_saved_labels(directory)
        try:
            model = cls(config.model, len(label_set), base_dir=directory)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{directory}: the saved model cannot be rebuilt from {CONFIG_NAME} and "
                                  f"encoders/ ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        load_weights(model, directory, allow_pickle=allow_pickle)
        model.eval()
        return model, config, label_set


def load_saved_config(directory: Path) -> Config:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a saved mmemo model (no {CONFIG_NAME})")
    return load_config(path)


def load_saved_labels(directory: Path) -> LabelSet:
    """The label list of ``labels.json``: ``{"label_set": name, "labels": [...]}``."""
    path = directory / LABELS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a saved model lists its labels there")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise CheckpointError(f"{path}: expected {{\"labels\": [label names]}} with one or more names")
    try:
        return get_label_set(data.get("label_set"), labels)
    except LabelError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_weights(model: nn.Module, directory: Path, allow_pickle: bool = False) -> None:
    """Weights from ``model.safetensors``; a pickled ``.bin``/``.pt`` only with explicit opt-in."""
    weights = directory / WEIGHTS_NAME
    if weights.exists():
        _load_safetensors(model, weights)
        return
    pickles = [directory / name for name in PICKLED_NAMES if (directory / name).exists()]
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"{pickles[0]}: refusing to load a pickled checkpoint (it can run arbitrary code); "
            "convert it to safetensors or pass allow_pickle=True if you trust its source"
        )
    if pickles:
        try:
            state = torch.load(pickles[0], map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any failure of an opted-in pickle is a damaged file
            raise CheckpointError(f"{pickles[0]}: cannot be loaded ({type(exc).__name__}: {exc})"[:500]) from None
        return
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}")


def _load_safetensors(model: nn.Module, path: Path) -> None:
    """Load and check every tensor: a truncated file, a missing or extra tensor, or a shape that differs from
    the config (say a labels.json with another number of labels) names the file and the tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); the file is damaged") from None
    for key, tensor in model.state_dict().items():
        if key in stored and list(stored[key]) != list(tensor.shape):
            hint = f"; {LABELS_NAME} lists {tensor.shape[0]} labels" if key.startswith("head.") else ""
            raise CheckpointError(f"{path}: {key} has shape {list(stored[key])}, the config builds "
                                  f"{list(tensor.shape)}{hint}")
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot be loaded ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the config (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing it; the old copy is removed only after the new one is in place."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
