"""Typed configuration: dataclasses are the schema, YAML fills them, ``key.sub=value`` overrides them.

Every error names the dotted key and what is allowed, because a typo in a sweep should fail in the
first second, not after an hour of training.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from mmemo.errors import ConfigError
from mmemo.labels import get_label_set
from mmemo.registry import ENCODERS, FUSIONS, LOSS_TERMS, READERS, Registry

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")


# --------------------------------------------------------------------------------------------------
# Schema. Each field's comment is its documentation: docs/configuration.md is generated from it
# (scripts/gen_config_docs.py), and a test fails when the two differ.
# --------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the examples come from and how media are decoded. ``source`` selects a registered reader,
    whose config dataclass adds its own fields (the readers in ``mmemo/data/readers/``)."""

    registry: ClassVar[Registry] = READERS
    path_fields: ClassVar[tuple[str, ...]] = ()  # fields holding paths, resolved against the config file's folder

    source: str = "meld"  # the reader: meld, emorynlp, manifest, hf (`mmemo models` lists them)
    # a named label set (mmemo/labels.py): meld7, meld_sentiment, emorynlp7, ravdess8, ...; null: the source's own
    # (a datasets ClassLabel column's names)
    label_set: str | None = "meld7"
    labels: list[str] | None = None  # an explicit label list instead of a named label set
    label_map: dict[str, str | None] = field(default_factory=dict)  # raw label -> label; null drops the row
    sample_rate: int = 16000  # audio is decoded to mono at this rate
    max_audio_seconds: float = 10.0  # audio is cut after this many seconds, in training and in predict
    num_frames: int = 8  # frames sampled uniformly across each video clip
    max_examples: int | None = None  # per split, for quick runs; never used for reported numbers
    num_workers: int = 0  # DataLoader worker processes decoding media
    embedding_cache: bool = True  # frozen encoders: compute outputs once per example, read them from disk after
    cache_dir: str | None = None  # the embedding cache's folder; default: $MMEMO_CACHE_DIR, else ~/.cache/mmemo/embeddings
    # Extra training corpora (multi-task), name -> that corpus's own data section. Its train split joins
    # training with its labels as the target of a head of its own (filled in as model.aux_labels[name]); the
    # emotion head, selection and metrics see the main corpus alone. Examples from an episode of the main
    # corpus's dev or test split are left out of it (where both readers give season and episode, as MELD's
    # and EmoryNLP's do).
    auxiliary: dict[str, DataConfig] = field(default_factory=dict)
    # Auxiliary corpora only: this corpus's label -> the main corpus's label. Its examples with one of these
    # labels also train the emotion head with the mapped label; the others train their own head only.
    main_label_map: dict[str, str] = field(default_factory=dict)


# The DataConfig fields that change what a processor makes of an example (part of an embedding-cache key).
PREPROCESSING_FIELDS: tuple[str, ...] = ("sample_rate", "max_audio_seconds", "num_frames")


@dataclass
class EncoderConfig:
    """Base of every encoder's config; ``name`` selects the registered encoder, whose config dataclass (beside
    its code in ``mmemo/models/encoders/``) adds its own fields."""

    registry: ClassVar[Registry] = ENCODERS

    name: str = ""  # the encoder: hf_text, logmel_cnn, acoustic, hf_audio, timm, hog (`mmemo models` lists them)
    freeze: bool = False  # keep the encoder's weights fixed; its outputs are then cached (data.embedding_cache)
    lr: float | None = None  # learning rate of this encoder's backbone (default: train.encoder_lr)


@dataclass
class FusionConfig:
    """Base of every fusion's config; ``name`` selects the registered fusion, whose config dataclass (beside its
    code in ``mmemo/models/fusion/``) adds its own fields."""

    registry: ClassVar[Registry] = FUSIONS

    name: str = "concat"  # concat, late, gated, tensor, low_rank, cross_attention, bottleneck, probe
    dim: int = 256  # width of the fused embedding the head reads
    dropout: float = 0.1  # dropout inside the fusion module
    # training only: the chance of marking a modality absent (one value, or one per modality such as
    # {vision: 0.3}); an example never loses every modality
    modality_dropout: float | dict[str, float] = 0.0


@dataclass
class ModelConfig:
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))  # any of text, audio, vision
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)  # modality -> its encoder
    fusion: FusionConfig = field(default_factory=lambda: from_dict(FusionConfig, {}, "model.fusion"))
    head_dropout: float = 0.1  # dropout before the emotion head's linear layer
    # Extra training targets (multi-task): each example's meta field of that name (e.g. MELD's sentiment)
    # -> its class names. Each gets its own linear head on the fused embedding, trained by the aux_heads loss
    # term; predictions always come from the one emotion head.
    aux_labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class LossTermConfig:
    """Base of every loss term's config (an item of ``train.loss_terms``); ``name`` selects the registered term,
    whose config dataclass (in ``mmemo/training/loss_terms/``) adds its own fields."""

    registry: ClassVar[Registry] = LOSS_TERMS

    name: str = ""  # rdrop, supcon, distill, l2, aux_heads (`mmemo models` lists them)
    weight: float = 1.0  # the term joins the loss multiplied by this

    def validate(self, key: str) -> None:
        if self.weight < 0:
            raise ConfigError(f"{key}.weight: must be >= 0, got {self.weight}")


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 16  # examples per batch (per process)
    eval_batch_size: int | None = None  # default: batch_size
    lr: float = 1e-4  # learning rate of the fusion module, the head and what encoders add on top of a backbone
    encoder_lr: float = 2e-5  # learning rate of the encoders' (pretrained) backbones
    layer_decay: float = 1.0  # < 1: layer-wise learning-rate decay in the text encoder (Sun et al. 2019)
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (not on biases and norms)
    max_grad_norm: float | None = 1.0  # clip the gradient norm to this; null: no clipping
    grad_accum: int = 1  # one optimiser step every this many batches
    loss: Literal["ce", "focal"] = "ce"  # cross-entropy, or focal loss (Lin et al. 2017)
    focal_gamma: float = 2.0  # focal loss: the focusing exponent
    label_smoothing: float = 0.0  # of the main loss's targets (Szegedy et al. 2016)
    # auto: n / (C * count) from the train split; sqrt: its square root, a milder push towards rare classes
    class_weights: Literal["none", "auto", "sqrt"] | list[float] = "none"
    # Terms added to the main loss, each {name: ..., weight: ..., its own options}: rdrop (R-Drop), supcon
    # (supervised contrastive), distill (self-distillation towards the moving average), l2 (an L2 penalty),
    # aux_heads (the auxiliary heads' cross-entropy; on, at weight 0.5, whenever the model has such heads)
    loss_terms: list[LossTermConfig] = field(default_factory=list)
    # > 0: also keep an exponential moving average of the weights (this decay per optimiser step); it is
    # what is evaluated, selected and saved. About 1 / (1 - decay) steps are averaged.
    ema_decay: float = 0.0
    # > 0: FGM adversarial training (Miyato et al. 2017): after each backward pass the text encoder's token
    # embeddings move by this L2 norm along their gradient, and the loss there joins the gradient. Twice the
    # compute a step; 1.0 is the usual setting for BERT-size models.
    adversarial_epsilon: float = 0.0
    # > 0: the first this many epochs (counted in epochs) train only the fusion module and the head, on the
    # encoders' features (LP-FT, Kumar et al. 2022); the encoders' warmup and decay start after them
    head_only_epochs: int = 0
    # random; balanced: class-balanced draws; length_bucketed: batches of similar text length (fast text runs)
    sampler: Literal["random", "balanced", "length_bucketed"] = "random"
    # length_bucketed: examples are sorted by length within pools of this many batches (then the batches
    # are shuffled); larger pools pad less and make each batch's lengths more alike
    bucket_pool_batches: int = 50
    scheduler: Literal["constant", "linear", "cosine"] = "linear"  # the learning rate after warmup
    warmup_ratio: float = 0.0  # the first this fraction of the steps warm the learning rate up linearly
    select_on: str = "dev"  # the split the best epoch is selected on (never test)
    # best: keep the epoch with the best select_on metric (the first, on ties); last: keep the final epoch
    # (no selection), e.g. a regularised linear model trained to convergence, as scikit-learn fits one
    selection: Literal["best", "last"] = "best"
    metric: Literal["weighted_f1", "macro_f1", "accuracy", "uar"] = "weighted_f1"  # what selection maximises
    early_stopping_patience: int | None = None  # stop after this many epochs without a better select_on metric
    eval_test: bool = True  # evaluate the dev-selected checkpoint on test once, at the end
    seed: int = 0  # seeds Python, NumPy, torch, the encoders' initialisation and the data order
    deterministic: bool = False  # torch's deterministic algorithms for the run
    # auto: bf16 on GPUs that have it, fp16 on older GPUs, full precision on CPU
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    checkpoint_every_steps: int | None = None  # also checkpoint every this many optimiser steps (besides each epoch)
    log_every_steps: int = 20  # TensorBoard: the running loss and learning rates every this many steps
    max_steps: int | None = None  # stop early, for smoke tests
    progress: bool = True  # progress bars


@dataclass
class Config:
    name: str = "run"  # run folders are named <name>-<timestamp>
    output_dir: str = "runs"  # where run folders are made
    data: DataConfig = field(default_factory=lambda: from_dict(DataConfig, {}, "data"))
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    def encoder(self, modality: str) -> EncoderConfig:
        return self.model.encoders[modality]


# --------------------------------------------------------------------------------------------------
# Dict -> dataclass with type checks
# --------------------------------------------------------------------------------------------------


def type_name(tp: Any) -> str:
    """A type annotation as a user reads it: ``int | null``, ``list[str]``, ``'ce' | 'focal'``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        given = [a for a in args if a is not type(None)]
        if len(given) == 1 and dataclasses.is_dataclass(given[0]):  # an optional section: its own errors name the key
            return _coerce(value, given[0], key)
        errors = []
        # Try non-container types first so that "auto" matches a Literal before list[float].
        for arg in sorted(args, key=lambda a: typing.get_origin(a) in (list, dict)):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and ("no" if not value else "yes") in allowed:
            return "no" if not value else "yes"  # YAML 1.1 reads a bare `no` as False
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list ({type_name(tp)}), got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping ({type_name(tp)}), got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported schema type {tp!r}")


# Settings of earlier versions that ``upgrade`` cannot carry over, by (config class, key): why, for the error.
_NO_GAIN = "removed; it measured no gain, see experiments/meld_text/README.md"
RETIRED: dict[tuple[str, str], str] = {
    ("TrainConfig", "bucket_by"): "removed: length buckets sort on the utterance with its context",
    **{("HFTextConfig", key): _NO_GAIN for key in ("pool_speaker_name", "ascii_punctuation", "target_segment",
                                                   "context_dropout")},
}


def upgrade(data: dict) -> dict:
    """A config written by an earlier version (a saved model's or a run's config.yaml) in today's schema: the
    loss weights of ``train`` become ``train.loss_terms``, a manifest's own section moves into ``data``, and
    retired keys at their old defaults go. A retired key that was set to something else stays, so that the
    error names it (``RETIRED``) instead of a model that silently differs from the one trained."""
    out = copy.deepcopy(data)
    sections = [out.get("data")] + list((out.get("data") or {}).get("auxiliary", {}).values()) if isinstance(
        out.get("data"), dict) else []
    for d in (s for s in sections if isinstance(s, dict)):
        manifest = d.pop("manifest", None) if isinstance(d.get("manifest"), dict) else None
        source = d.get("source", "meld")
        if source == "manifest":
            for k, v in (manifest or {}).items():
                if v not in (None, {}, []):
                    d.setdefault(k, v)
            if d.get("label_column"):
                d.setdefault("columns", {})["label"] = d["label_column"]
            d.pop("label_column", None)
            d.pop("root", None)
        elif source == "emorynlp":
            d.pop("label_column", None)
    train = out.get("train")
    if isinstance(train, dict):
        terms = train.get("loss_terms") or []
        for old, name in (("rdrop_alpha", "rdrop"), ("supcon_weight", "supcon"), ("distill_weight", "distill"),
                          ("l2_penalty", "l2")):
            weight = train.pop(old, 0.0)
            if weight:
                term = {"name": name, "weight": weight}
                if name == "supcon":
                    term["temperature"] = train.get("supcon_temperature", 0.3)
                terms.append(term)
        train.pop("supcon_temperature", None)
        aux_weight = train.pop("aux_weight", 0.5)
        if aux_weight != 0.5:
            terms.append({"name": "aux_heads", "weight": aux_weight})
        if terms:
            train["loss_terms"] = terms
        if train.get("bucket_by") == "input":
            del train["bucket_by"]
    encoders = (out.get("model") or {}).get("encoders") if isinstance(out.get("model"), dict) else None
    text = encoders.get("text") if isinstance(encoders, dict) else None
    if isinstance(text, dict):
        for key, default in (("pool_speaker_name", True), ("ascii_punctuation", False), ("target_segment", False),
                             ("context_dropout", 0.0)):
            if key in text and text[key] == default:
                del text[key]
    return out


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {data!r}")
    registry = cls.__dict__.get("registry")
    if registry is not None:  # a polymorphic base: the registered part's own config dataclass reads the section
        default = {f.name: f.default for f in dataclasses.fields(cls)}[registry.key]
        cls = registry.config_class(data.get(registry.key, default), key or "config")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else str(name)
        if name not in fields:
            retired = RETIRED.get((cls.__name__, name))
            hint = f" ({retired})" if retired else ""
            raise ConfigError(f"{sub}: unknown key{hint}; allowed: {', '.join(fields)}")
        kwargs[name] = _coerce(value, hints[name], sub)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(key)
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------
# Loading, overrides, validation
# --------------------------------------------------------------------------------------------------


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["train.lr=3e-5", "model.modalities=[text]"]`` -> nested dict, values parsed as YAML."""
    tree: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        dotted, raw = item.split("=", 1)
        if not dotted:
            raise ConfigError(f"override {item!r}: empty key")
        _set_dotted(tree, dotted.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A new encoder, fusion or reader replaces that section instead of mixing two schemas.
            if any(k in value and value[k] != out[key].get(k) for k in ("name", "source")):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_encoder(modality: str) -> dict:
    return {
        "text": {"name": "hf_text"},
        "audio": {"name": "logmel_cnn"},
        "vision": {"name": "timm"},
    }[modality]


def build_config(data: dict, base_dir: Path | None = None) -> Config:
    config = from_dict(Config, data)
    validate(config)
    if base_dir is not None:
        for d in (config.data, *config.data.auxiliary.values()):
            for name in d.path_fields:
                value = getattr(d, name)
                if isinstance(value, str):
                    setattr(d, name, _resolve_path(value, base_dir))
                elif isinstance(value, dict):
                    setattr(d, name, {k: _resolve_path(v, base_dir) for k, v in value.items()})
    return config


def _resolve_path(path: str, base_dir: Path) -> str:
    """Relative data paths in a config file are relative to the working directory when they exist
    there (``data/MELD.Raw``), else to the config file's own folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    candidate = base_dir / p
    return str(candidate) if candidate.exists() else str(p)


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` from a YAML error, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load a YAML config (or defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    base_dir = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML{_yaml_where(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        base_dir = path.parent
    if overrides:
        update = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        data = merge(data, update)
    data = upgrade(data)
    # Fill in default encoders for modalities that have none, so `model.modalities=[text,audio]` works.
    model = data.setdefault("model", {}) if isinstance(data.get("model", {}), dict) else data["model"]
    if isinstance(model, dict):
        mods = model.get("modalities", list(MODALITIES))
        encoders = model.setdefault("encoders", {})
        if isinstance(mods, list) and isinstance(encoders, dict):
            for m in mods:
                if m in MODALITIES and m not in encoders:
                    encoders[m] = default_encoder(m)
                elif m in MODALITIES and isinstance(encoders[m], dict) and "name" not in encoders[m]:
                    encoders[m] = {**default_encoder(m), **encoders[m]}
    try:
        return build_config(data, base_dir)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def validate(config: Config) -> None:
    """Checks across sections (each section's own checks are its dataclass's ``validate``)."""
    mods = config.model.modalities
    if not mods:
        raise ConfigError("model.modalities: empty; choose one or more of text, audio, vision")
    for m in mods:
        if m not in MODALITIES:
            raise ConfigError(f"model.modalities: unknown modality '{m}'; allowed: {', '.join(MODALITIES)}")
    if len(set(mods)) != len(mods):
        raise ConfigError(f"model.modalities: duplicates in {mods}")
    for m, enc in config.model.encoders.items():
        if m not in MODALITIES:
            raise ConfigError(f"model.encoders.{m}: unknown modality; allowed: {', '.join(MODALITIES)}")
        entry = ENCODERS.get(enc.name)
        if entry.modality != m:
            raise ConfigError(
                f"model.encoders.{m}.name: '{enc.name}' is a {entry.modality} encoder; "
                f"allowed for {m}: {', '.join(ENCODERS.names(modality=m))}"
            )
    missing = [m for m in mods if m not in config.model.encoders]
    if missing:
        raise ConfigError(f"model.encoders: no encoder configured for {', '.join(missing)}")
    mdo = config.model.fusion.modality_dropout
    probs = mdo.values() if isinstance(mdo, dict) else [mdo]
    for p in probs:
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"model.fusion.modality_dropout: probabilities must be in [0, 1), got {p}")
    if isinstance(mdo, dict):
        for m in mdo:
            if m not in MODALITIES:
                raise ConfigError(f"model.fusion.modality_dropout.{m}: unknown modality; allowed: {', '.join(MODALITIES)}")
    t = config.train
    for name in ("epochs", "batch_size", "grad_accum", "bucket_pool_batches"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}: must be >= 1, got {getattr(t, name)}")
    if t.ema_decay and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: {t.ema_decay} is not in [0, 1); 0 turns the average off")
    if not 0 <= t.head_only_epochs < t.epochs:
        raise ConfigError(f"train.head_only_epochs: must be in [0, train.epochs) = [0, {t.epochs}) (0 turns the "
                          f"head-only phase off), got {t.head_only_epochs}")
    if t.adversarial_epsilon < 0:
        raise ConfigError(f"train.adversarial_epsilon: must be >= 0 (0 turns it off), got {t.adversarial_epsilon}")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    names = [term.name for term in t.loss_terms]
    for i, term in enumerate(t.loss_terms):
        if term.name in names[:i]:
            raise ConfigError(f"train.loss_terms[{i}]: {term.name} is listed twice")
        if hasattr(term, "check"):
            term.check(config, f"train.loss_terms[{i}]")
    for name, classes in config.model.aux_labels.items():
        if len(classes) < 2 or len({c.strip().lower() for c in classes}) != len(classes):
            raise ConfigError(f"model.aux_labels.{name}: needs two or more distinct class names, got {list(classes)}")
    if config.data.main_label_map:
        raise ConfigError("data.main_label_map: only an auxiliary corpus (data.auxiliary.NAME) maps its labels onto "
                          "the main corpus's")
    main_classes = ({c.lower() for c in get_label_set(config.data.label_set, config.data.labels).names}
                    if config.data.auxiliary else set())
    for name, aux in config.data.auxiliary.items():
        key = f"data.auxiliary.{name}"
        if aux.auxiliary:
            raise ConfigError(f"{key}.auxiliary: an auxiliary corpus cannot have auxiliary corpora of its own")
        if name in ("source", "split", "corpus"):
            raise ConfigError(f"{key}: '{name}' is a field every example carries; name the corpus otherwise")
        classes = list(get_label_set(aux.label_set, aux.labels).names)
        given = config.model.aux_labels.get(name)
        if given is not None and [c.strip().lower() for c in given] != [c.lower() for c in classes]:
            raise ConfigError(f"model.aux_labels.{name}: {list(given)} differs from the label set of {key} ({classes}); "
                              f"leave it out and it is filled in")
        config.model.aux_labels[name] = classes
        for own, main in aux.main_label_map.items():
            if str(own).strip().lower() not in {c.lower() for c in classes}:
                raise ConfigError(f"{key}.main_label_map: {own!r} is not a label of {key} ({classes})")
            if str(main).strip().lower() not in main_classes:
                raise ConfigError(f"{key}.main_label_map.{own}: {main!r} is not a label of the main corpus "
                                  f"({sorted(main_classes)})")
    if config.data.auxiliary and t.sampler == "balanced":
        raise ConfigError("train.sampler: balanced is not supported with data.auxiliary (its examples have no emotion "
                          "label to balance); use random or length_bucketed")
    if config.train.select_on == "test":
        raise ConfigError("train.select_on: selecting on test is not allowed; use dev (or another held-in split)")
