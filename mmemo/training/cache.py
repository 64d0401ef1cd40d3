"""The embedding cache: a frozen encoder's output for each example, computed once and read from disk after.

A frozen encoder is a fixed function of its input, so decoding a clip and running, say, a ResNet over its
frames every epoch of every run of a sweep only repeats work. With ``data.embedding_cache`` on (the
default), the trainer computes what a frozen encoder returns (``ModalityEmbedding`` seq/mask/pooled) once
per example, stores it, and from then on the dataset hands the model that embedding instead of the media:
the model uses an input that already is a ``ModalityEmbedding`` as is (``EmotionModel.encode``).

Layout, one folder per encoder fingerprint::

    <cache_dir>/<modality>-<encoder>-<fingerprint>/
        fingerprint.json              what the fingerprint was made of (for people; the name is its digest)
        <sha256>.safetensors          shards: seq [tokens, D], mask [tokens], offsets [rows + 1], pooled [rows, D]

- The **fingerprint** hashes the encoder config (a vision encoder's face-crop settings among it), a digest
  of the encoder's weights, the preprocessing config (``PREPROCESSING_FIELDS``), the source of the modules
  defining the encoder, its processor and the processor's parts (the face stage), and the mixed precision.
  Any change selects another folder: a stale entry is never read.
- An **example key** hashes what a processor can see of an example (text, speaker, context, media paths
  with their size and modification time; not the label). Editing a CSV row or replacing a clip misses.
- Each **shard** is written to a temporary file and renamed to the SHA-256 of its bytes. On opening, every
  shard is checked against its name; a truncated or corrupt one is deleted (with a warning) and its
  examples are computed again. Temporary files of an interrupted write are never read.
- Media that could not be used are stored as such (path, reason): with the cache on, they are still
  marked absent and listed in ``media_issues.csv``, without touching the file again.

Embeddings are computed one batch at a time (padding trimmed per example); for encoders whose output does
not depend on padding (transformers with attention masks, per-frame CNNs) this equals the uncached output
up to float rounding.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmemo.config import PREPROCESSING_FIELDS, Config, DataConfig, EncoderConfig, to_dict
from mmemo.data.dataset import Collator, EmotionDataset
from mmemo.data.examples import Example
from mmemo.data.media import MediaError, media_identity
from mmemo.models.encoders.base import Encoder, ModalityEmbedding, Processor, pad_stack
from mmemo.models.model import EmotionModel
from mmemo.training.checkpoint import sha256_file

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)

FORMAT = "mmemo-embedding-cache/2"
SHARD_BYTES = 256 * 2**20  # a shard is written once this much is pending
STALE_TMP_SECONDS = 3600  # temporary files older than this are left-overs of an interrupted write


def default_cache_dir() -> Path:
    if os.environ.get("MMEMO_CACHE_DIR"):
        return Path(os.environ["MMEMO_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "mmemo" / "embeddings"


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    """SHA-256 of a JSON document; only JSON types (anything else is a bug in the caller, never ``str()``-ed)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_value).encode()).hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic,)):
        return value.item()
    raise TypeError(f"embedding cache: cannot key a value of type {type(value).__name__}")


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes, bytes): the weights' identity,
    whether they came from a checkpoint, a file or a seeded random initialisation."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _code_digest(*classes: type) -> str:
    """SHA-256 of the source files that define ``classes`` and their mmemo base classes."""
    files = set()
    for cls in classes:
        for klass in cls.__mro__:
            if klass.__module__.startswith("mmemo."):
                files.add(inspect.getfile(klass))
    files.add(inspect.getfile(MediaError))  # decoding
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def encoder_fingerprint(
    modality: str, encoder: Encoder, processor: Processor, data: DataConfig, precision: str = "no"
) -> dict[str, Any]:
    """What a frozen encoder's embedding of an example depends on, besides the example itself."""
    config: EncoderConfig = encoder.config
    return {
        "format": FORMAT,
        "modality": modality,
        "encoder": {k: v for k, v in to_dict(config).items() if k not in ("freeze", "lr")},
        "weights": weights_digest(encoder),
        "preprocessing": {name: getattr(data, name) for name in PREPROCESSING_FIELDS},
        "code": _code_digest(type(encoder), type(processor), *(type(part) for part in processor.parts())),
        "precision": precision,
        "fitted": _digest(processor.fitted_state()),  # statistics the processor learnt from the data
    }


def example_key(example: Example) -> str:
    """A digest of what a processor can see of ``example``: its content, not its label or position. Media are
    identified by ``media_identity``: files by path, size and modification time, in-memory media (arrays, PIL
    images, ``(array, rate)``, bytes) by a hash of their content."""
    meta = {k: v for k, v in example.meta.items() if k not in ("source", "row")}
    fields = {
        "text": example.text, "speaker": example.speaker, "meta": {k: media_identity(v) if _is_media(v) else v
                                                                     for k, v in meta.items()},
        "context_before": [[t.speaker, t.text] for t in example.context_before],
        "context_after": [[t.speaker, t.text] for t in example.context_after],
        **{name: media_identity(getattr(example, name)) for name in ("audio", "video", "image")},
    }
    return _digest(fields)[:40]


def _is_media(value: Any) -> bool:
    return not isinstance(value, (str, int, float, bool, type(None), list, dict))


# --------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------


_VERIFIED: set[tuple[str, int, int]] = set()  # shards checked by this process (path, size, mtime)


class EmbeddingCache:
    """One encoder fingerprint's folder: an index of what is stored, and the writer that adds to it."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if fingerprint is not None and not (self.directory / "fingerprint.json").exists():
            _write_atomic(self.directory / "fingerprint.json", json.dumps(fingerprint, indent=1).encode())
        self.shards: list[str] = []
        self.offsets: list[torch.Tensor] = []
        self.rows: dict[str, tuple[int, int]] = {}  # example key -> (shard, row)
        self.unusable: dict[str, list[str] | None] = {}  # example key -> [path, reason, detail], None: absent
        self._load()

    @classmethod
    def for_encoder(cls, root: str | Path, modality: str, encoder: Encoder, processor: Processor, data: DataConfig,
                    precision: str = "no") -> EmbeddingCache:
        fingerprint = encoder_fingerprint(modality, encoder, processor, data, precision)
        name = f"{modality}-{encoder.config.name}-{_digest(fingerprint)[:24]}"
        return cls(Path(root) / name, fingerprint)

    def _load(self) -> None:
        now = time.time()
        for tmp in self.directory.glob(".*.tmp"):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.safetensors")):
            if not self._verify(path):
                continue
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                offsets = f.get_tensor("offsets")
            index = len(self.shards)
            self.shards.append(str(path))
            self.offsets.append(offsets)
            for row, key in enumerate(json.loads(meta["keys"])):
                self.rows[key] = (index, row)
            for key, issue in json.loads(meta["unusable"]).items():
                self.unusable[key] = issue

    def _verify(self, path: Path) -> bool:
        st = path.stat()
        ident = (str(path), st.st_size, st.st_mtime_ns)
        if ident in _VERIFIED:
            return True
        ok = sha256_file(path) == path.stem
        if ok:
            try:
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    ok = (f.metadata() or {}).get("format") == FORMAT and {"seq", "mask", "pooled", "offsets"} <= set(f.keys())
            except Exception:  # noqa: BLE001 - any unreadable header means a bad shard
                ok = False
        if not ok:
            log.warning("embedding cache: %s is corrupt or incomplete; removed, its examples will be computed again", path)
            path.unlink(missing_ok=True)
            return False
        _VERIFIED.add(ident)
        return True

    def __contains__(self, key: str) -> bool:
        return key in self.rows or key in self.unusable

    def __len__(self) -> int:
        return len(self.rows) + len(self.unusable)

    def processor(self, modality: str) -> CachedProcessor:
        return CachedProcessor(modality, self.shards, self.offsets, self.rows, self.unusable)

    # -- building ------------------------------------------------------------------------------------

    def add(self, examples: Iterable[Example], encoder: Encoder, processor: Processor, *, batch_size: int = 16,
            num_workers: int = 0, device: torch.device | str = "cpu", autocast=nullcontext, progress: bool = True) -> int:
        """Compute and store the embeddings of the ``examples`` not cached yet; returns how many were computed."""
        todo: dict[str, Example] = {}
        for ex in examples:
            key = example_key(ex)
            if key not in self and key not in todo:
                todo[key] = ex
        if not todo:
            return 0
        keys, missing = list(todo), list(todo.values())
        modality = processor.modality
        # Its own generator: building a cache must not advance the global RNG (a cold and a warm run of the
        # same config train identically).
        loader = DataLoader(EmotionDataset(missing, {modality: processor}), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=Collator({modality: processor}),
                            generator=torch.Generator().manual_seed(0))
        from tqdm.auto import tqdm

        writer = _ShardWriter(self.directory, encoder.dim)
        was_training = encoder.training
        encoder.eval()
        id_to_key = {ex.id: key for key, ex in zip(keys, missing)}
        try:
            with torch.inference_mode(), autocast():
                for batch in tqdm(loader, desc=f"caching {modality} embeddings", disable=not progress, leave=False):
                    for issue in batch["issues"]:
                        writer.unusable[id_to_key[issue.example_id]] = [issue.path, issue.reason, issue.detail]
                    index = batch["index"].tolist()
                    present = batch["present"][:, 0].tolist()
                    for i, has in zip(index, present):
                        if not has and keys[i] not in writer.unusable:
                            writer.unusable[keys[i]] = None  # the example has no such input
                    if modality in batch["inputs"]:
                        inputs = {k: v.to(device) for k, v in batch["inputs"][modality].items()}
                        emb = encoder(**inputs)
                        rows = [i for i, has in zip(index, present) if has]
                        for j, i in enumerate(rows):
                            writer.add(keys[i], emb.seq[j], emb.mask[j], emb.pooled[j])
                    if writer.pending_bytes >= SHARD_BYTES:
                        self._flushed(writer.flush())
            self._flushed(writer.flush())
        finally:
            encoder.train(was_training)
        return len(missing)

    def _flushed(self, path: Path | None) -> None:
        if path is not None:
            _VERIFIED.add((str(path), path.stat().st_size, path.stat().st_mtime_ns))
            self.shards, self.offsets, self.rows, self.unusable = [], [], {}, {}
            self._load()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _ShardWriter:
    def __init__(self, directory: Path, dim: int):
        self.directory, self.dim = directory, dim
        self._reset()

    def _reset(self) -> None:
        self.keys: list[str] = []
        self.seq: list[torch.Tensor] = []
        self.mask: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] = []
        self.unusable: dict[str, list[str] | None] = {}
        self.pending_bytes = 0

    def add(self, key: str, seq: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> None:
        real = mask.nonzero()
        length = int(real.max()) + 1 if real.numel() else 1  # trailing padding is dropped
        self.keys.append(key)
        self.seq.append(seq[:length].detach().to("cpu").contiguous())
        self.mask.append(mask[:length].detach().to("cpu", torch.bool))
        self.pooled.append(pooled.detach().to("cpu"))
        self.pending_bytes += self.seq[-1].numel() * self.seq[-1].element_size()

    def flush(self) -> Path | None:
        if not self.keys and not self.unusable:
            return None
        from safetensors.torch import save

        if self.keys:
            seq, mask, pooled = torch.cat(self.seq), torch.cat(self.mask), torch.stack(self.pooled)
        else:
            seq, mask, pooled = torch.zeros(0, self.dim), torch.zeros(0, dtype=torch.bool), torch.zeros(0, self.dim)
        lengths = torch.tensor([0] + [s.shape[0] for s in self.seq], dtype=torch.long)
        data = save(
            {"seq": seq, "mask": mask, "pooled": pooled.contiguous(), "offsets": lengths.cumsum(0)},
            metadata={"format": FORMAT, "keys": json.dumps(self.keys), "unusable": json.dumps(self.unusable)},
        )
        path = self.directory / f"{hashlib.sha256(data).hexdigest()}.safetensors"
        _write_atomic(path, data)
        self._reset()
        return path


# --------------------------------------------------------------------------------------------------
# Reading, in DataLoader workers
# --------------------------------------------------------------------------------------------------


class CachedProcessor(Processor):
    """Stands in for a frozen encoder's processor: an example -> its stored embedding (``None`` when the
    example lacks the modality, the stored ``MediaError`` when its media could not be used). ``collate``
    pads into a ``ModalityEmbedding``, which the model uses instead of running the encoder."""

    def __init__(self, modality: str, shards: list[str], offsets: list[torch.Tensor], rows: dict[str, tuple[int, int]],
                 unusable: dict[str, list[str] | None]):
        self.modality = modality
        self.shards, self.offsets, self.rows, self.unusable = shards, offsets, rows, unusable
        self._files: dict[int, Any] = {}  # opened lazily in each process (memory-mapped)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}

    def _file(self, shard: int):
        if shard not in self._files:
            from safetensors import safe_open

            self._files[shard] = safe_open(self.shards[shard], framework="pt")
        return self._files[shard]

    def __call__(self, example: Example) -> dict[str, torch.Tensor] | None:
        key = example_key(example)
        if key in self.unusable:
            issue = self.unusable[key]
            if issue is None:
                return None
            raise MediaError(*issue)
        if key not in self.rows:
            raise RuntimeError(f"embedding cache: no {self.modality} entry for example {example.id}; "
                               "did its text or media change during the run?")
        shard, row = self.rows[key]
        start, end = int(self.offsets[shard][row]), int(self.offsets[shard][row + 1])
        f = self._file(shard)
        return {"seq": f.get_slice("seq")[start:end], "mask": f.get_slice("mask")[start:end],
                "pooled": f.get_slice("pooled")[row:row + 1][0]}

    def collate(self, items: list[dict[str, torch.Tensor]]) -> ModalityEmbedding:
        seq, _ = pad_stack([it["seq"] for it in items])
        mask, _ = pad_stack([it["mask"] for it in items], False)
        return ModalityEmbedding(seq, mask, torch.stack([it["pooled"] for it in items]))


# --------------------------------------------------------------------------------------------------
# The hook the trainer calls
# --------------------------------------------------------------------------------------------------


def cache_frozen_encoders(model: EmotionModel, processors: dict[str, Processor], examples: list[Example], config: Config,
                          accelerator: Accelerator | None = None) -> dict[str, Processor]:
    """``processors`` with each frozen encoder's processor replaced by a ``CachedProcessor``, after
    computing whatever ``examples`` are not cached yet. Unchanged when ``data.embedding_cache`` is off."""
    data = config.data
    frozen = [m for m, enc in model.encoders.items() if enc.is_frozen]
    if not data.embedding_cache or not frozen:
        return processors
    root = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    precision = accelerator.mixed_precision if accelerator is not None else "no"
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    out = dict(processors)
    for m in frozen:
        encoder = model.encoders[m]
        cache = EmbeddingCache.for_encoder(root, m, encoder, processors[m], data, precision)
        computed = cache.add(examples, encoder.to(device), processors[m], batch_size=config.train.eval_batch_size or config.train.batch_size,
                             num_workers=data.num_workers, device=device, autocast=autocast,
                             progress=config.train.progress and sys.stderr.isatty())
        log.info("embedding cache %s: %d computed, %d stored", cache.directory, computed, len(cache))
        out[m] = cache.processor(m)
    return out


__all__ = ["EmbeddingCache", "CachedProcessor", "cache_frozen_encoders", "example_key", "encoder_fingerprint",
           "default_cache_dir", "weights_digest"]
