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
from typing import Any, Literal, Union

import yaml

from mmemo.errors import ConfigError

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class ManifestConfig:
    """A CSV or JSONL table of examples; paths inside it are relative to its own folder."""

    path: str | None = None  # one table holding every split (see split_column / splits)
    paths: dict[str, str] = field(default_factory=dict)  # or one table per split: {train: a.csv, dev: b.csv}
    columns: dict[str, str] = field(default_factory=dict)  # field -> column, fields: see MANIFEST_FIELDS
    split_column: str | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)  # split -> values of split_column


@dataclass
class DataConfig:
    source: Literal["meld", "emorynlp", "manifest"] = "meld"
    root: str = "data/MELD.Raw"
    label_set: str = "meld7"
    labels: list[str] | None = None  # an explicit label list instead of a named label set
    label_column: str | None = None  # MELD: Emotion (or Sentiment for meld_sentiment)
    label_map: dict[str, str | None] = field(default_factory=dict)  # raw label -> label; null drops the row
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    sample_rate: int = 16000
    max_audio_seconds: float = 10.0
    num_frames: int = 8
    max_examples: int | None = None  # per split, for quick runs; never used for reported numbers
    num_workers: int = 0
    embedding_cache: bool = True  # frozen encoders: compute outputs once per example, read them from disk after
    cache_dir: str | None = None  # default: $MMEMO_CACHE_DIR, else ~/.cache/mmemo/embeddings
    # Extra training corpora (multi-task), name -> that corpus's own data section. Its train split joins
    # training with its labels as the target of a head of its own (model.aux_labels[name], filled in from its
    # label set, weighted by train.aux_weight); the emotion head, selection and metrics see this corpus
    # alone. Examples from an episode of this corpus's dev or test split are left out of it (where both readers
    # give season and episode, as MELD's and EmoryNLP's do).
    auxiliary: dict[str, DataConfig] = field(default_factory=dict)
    # Auxiliary corpora only: this corpus's label -> the main corpus's label. Its examples with one of these
    # labels also train the emotion head with the mapped label (besides their own head); the others train
    # their own head only. Empty: none do.
    main_label_map: dict[str, str] = field(default_factory=dict)


# The DataConfig fields that change what a processor makes of an example (part of an embedding-cache key).
PREPROCESSING_FIELDS: tuple[str, ...] = ("sample_rate", "max_audio_seconds", "num_frames")


@dataclass
class EncoderConfig:
    """Base of every encoder's config; ``name`` selects the registered encoder and its own fields."""

    name: str = ""
    freeze: bool = False
    lr: float | None = None  # learning rate of this encoder's backbone (default: train.encoder_lr)


@dataclass
class FusionConfig:
    """Base of every fusion's config; ``name`` selects the registered fusion and its own fields."""

    name: str = "concat"
    dim: int = 256
    dropout: float = 0.1
    modality_dropout: float | dict[str, float] = 0.0


@dataclass
class ModelConfig:
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head_dropout: float = 0.1
    # Extra training targets (multi-task): each example's meta field of that name (e.g. MELD's sentiment)
    # -> its class names. Each gets its own linear head on the fused embedding, trained with
    # train.aux_weight; predictions always come from the one emotion head.
    aux_labels: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int | None = None
    lr: float = 1e-4
    encoder_lr: float = 2e-5
    layer_decay: float = 1.0  # < 1 gives lower text-encoder layers smaller learning rates
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    grad_accum: int = 1
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    # > 0: R-Drop (Liang et al., NeurIPS 2021): each batch goes through twice under different dropout and
    # this weight times the symmetric KL between the two predictions joins the loss. Twice the compute.
    rdrop_alpha: float = 0.0
    # > 0: this weight times a supervised contrastive loss on the fused embeddings (same-label rows of a
    # batch pulled together, at supcon_temperature) joins the loss. Training only; inference is unchanged.
    supcon_weight: float = 0.0
    supcon_temperature: float = 0.3
    # > 0 (needs ema_decay): the moving average of the weights is a teacher. This weight times the mean squared
    # error between the model's logits and the average's (eval mode, no gradient) joins the loss: self-distillation
    # towards its own average (Xu et al. 2020, "Improving BERT fine-tuning via self-ensemble and
    # self-distillation"). One more forward pass a step, without gradient: about 10% more time on MELD text.
    distill_weight: float = 0.0
    # > 0: this coefficient times half the squared norm of every trainable weight matrix joins the loss. Unlike
    # AdamW's decoupled weight_decay, which barely moves weights in a few hundred steps, it is the L2 penalty of
    # a regularised logistic regression (scikit-learn's 1 / (C * n)), for small data and linear probes.
    l2_penalty: float = 0.0
    # > 0: FGM adversarial training (Miyato et al. 2017): after each backward pass the text encoder's token
    # embeddings move by this L2 norm along their gradient, and the loss there joins the gradient. Twice the
    # compute a step; 1.0 is the usual setting for BERT-size models.
    adversarial_epsilon: float = 0.0
    # this weight times the cross-entropy of each model.aux_labels head joins the loss
    aux_weight: float = 0.5
    # auto: n / (C * count) from the train split; sqrt: its square root, a milder push towards rare classes
    class_weights: Literal["none", "auto", "sqrt"] | list[float] = "none"
    # > 0: also keep an exponential moving average of the weights (this decay per optimiser step); it is
    # what is evaluated, selected and saved. About 1 / (1 - decay) steps are averaged.
    ema_decay: float = 0.0
    sampler: Literal["random", "balanced", "length_bucketed"] = "random"  # length_bucketed: fast text runs
    # length_bucketed: examples are sorted by length within pools of this many batches (then the batches
    # are shuffled); larger pools pad less and make each batch's lengths more alike
    bucket_pool_batches: int = 50
    # length_bucketed: what "length" is: the utterance with its dialogue context (input), or the utterance
    # alone (utterance), which groups short replies such as "Okay." together whatever their context
    bucket_by: Literal["input", "utterance"] = "input"
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    # > 0: the first this many epochs (counted in epochs) train only the fusion module and the head, on the
    # encoders' features (LP-FT, Kumar et al. 2022); the encoders' warmup and decay start after them
    head_only_epochs: int = 0
    warmup_ratio: float = 0.0
    select_on: str = "dev"
    # best: keep the epoch with the best select_on metric (the first, on ties); last: keep the final epoch
    # (no selection), e.g. a regularised linear model trained to convergence, as scikit-learn fits one
    selection: Literal["best", "last"] = "best"
    metric: Literal["weighted_f1", "macro_f1", "accuracy", "uar"] = "weighted_f1"
    early_stopping_patience: int | None = None
    eval_test: bool = True  # evaluate the dev-selected checkpoint on test once, at the end
    seed: int = 0
    deterministic: bool = False
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    checkpoint_every_steps: int | None = None
    log_every_steps: int = 20
    max_steps: int | None = None  # stop early, for smoke tests
    progress: bool = True


@dataclass
class Config:
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    def encoder(self, modality: str) -> EncoderConfig:
        return self.model.encoders[modality]


# --------------------------------------------------------------------------------------------------
# Polymorphic sections: encoders and fusions register their own config dataclasses
# --------------------------------------------------------------------------------------------------


def _polymorphic_class(base: type, data: dict, key: str) -> type:
    from mmemo.registry import ENCODERS, FUSIONS

    registry = ENCODERS if base is EncoderConfig else FUSIONS
    name = data.get("name", "" if base is EncoderConfig else "concat")
    if not name:
        raise ConfigError(f"{key}.name: missing; allowed: {', '.join(registry.names())}")
    if name not in registry:
        raise ConfigError(f"{key}.name: unknown {registry.kind} '{name}'; allowed: {', '.join(registry.names())}")
    return registry.get(name).config_class


# --------------------------------------------------------------------------------------------------
# Dict -> dataclass with type checks
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
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
        errors = []
        # Try non-container types first so that "auto" matches a Literal before list[float].
        for arg in sorted(args, key=lambda a: typing.get_origin(a) in (list, dict)):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
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
            raise ConfigError(f"{key}: expected a list ({_type_name(tp)}), got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping ({_type_name(tp)}), got {value!r}")
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


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {data!r}")
    if cls in (EncoderConfig, FusionConfig):
        cls = _polymorphic_class(cls, data, key)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else str(name)
        if name not in fields:
            raise ConfigError(f"{sub}: unknown key; allowed: {', '.join(fields)}")
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
            # A new encoder/fusion name replaces that section instead of mixing two schemas.
            if "name" in value and value["name"] != out[key].get("name"):
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
            d.root = _resolve_path(d.root, base_dir)
            m = d.manifest
            if m.path:
                m.path = _resolve_path(m.path, base_dir)
            m.paths = {k: _resolve_path(v, base_dir) for k, v in m.paths.items()}
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


def _validate_source(data: DataConfig, key: str) -> None:
    if data.source == "manifest":
        man = data.manifest
        if not man.path and not man.paths:
            raise ConfigError(f"{key}.manifest: set path (one table) or paths (one table per split)")
        if man.path and man.paths:
            raise ConfigError(f"{key}.manifest: set either path or paths, not both")
        from mmemo.data.manifest import MANIFEST_FIELDS

        for f in man.columns:
            if f not in MANIFEST_FIELDS:
                raise ConfigError(f"{key}.manifest.columns.{f}: unknown field; allowed: {', '.join(MANIFEST_FIELDS)}")


def validate(config: Config) -> None:
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
        from mmemo.registry import ENCODERS

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
    if t.rdrop_alpha < 0:
        raise ConfigError(f"train.rdrop_alpha: {t.rdrop_alpha} is negative; 0 turns R-Drop off")
    if t.ema_decay and not 0.0 < t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay: {t.ema_decay} is not in [0, 1); 0 turns the average off")
    if not 0 <= t.head_only_epochs < t.epochs:
        raise ConfigError(f"train.head_only_epochs: must be in [0, train.epochs) = [0, {t.epochs}) (0 turns the "
                          f"head-only phase off), got {t.head_only_epochs}")
    if t.supcon_weight < 0:
        raise ConfigError(f"train.supcon_weight: must be >= 0 (0 turns it off), got {t.supcon_weight}")
    if t.adversarial_epsilon < 0:
        raise ConfigError(f"train.adversarial_epsilon: must be >= 0 (0 turns it off), got {t.adversarial_epsilon}")
    if t.l2_penalty < 0:
        raise ConfigError(f"train.l2_penalty: must be >= 0 (0 turns it off), got {t.l2_penalty}")
    if t.aux_weight < 0:
        raise ConfigError(f"train.aux_weight: must be >= 0, got {t.aux_weight}")
    for name, classes in config.model.aux_labels.items():
        if len(classes) < 2 or len({c.strip().lower() for c in classes}) != len(classes):
            raise ConfigError(f"model.aux_labels.{name}: needs two or more distinct class names, got {list(classes)}")
    if t.distill_weight < 0:
        raise ConfigError(f"train.distill_weight: must be >= 0 (0 turns it off), got {t.distill_weight}")
    if t.distill_weight and not t.ema_decay:
        raise ConfigError("train.distill_weight: the teacher is the moving average of the weights; set train.ema_decay")
    if t.supcon_temperature <= 0:
        raise ConfigError(f"train.supcon_temperature: must be > 0, got {t.supcon_temperature}")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
    _validate_source(config.data, "data")
    if config.data.main_label_map:
        raise ConfigError("data.main_label_map: only an auxiliary corpus (data.auxiliary.NAME) maps its labels onto "
                          "the main corpus's")
    for name, aux in config.data.auxiliary.items():
        key = f"data.auxiliary.{name}"
        if aux.auxiliary:
            raise ConfigError(f"{key}.auxiliary: an auxiliary corpus cannot have auxiliary corpora of its own")
        if name in ("source", "split", "corpus"):
            raise ConfigError(f"{key}: '{name}' is a field every example carries; name the corpus otherwise")
        _validate_source(aux, key)
        from mmemo.labels import get_label_set

        classes = list(get_label_set(aux.label_set, aux.labels).names)
        given = config.model.aux_labels.get(name)
        if given is not None and [c.strip().lower() for c in given] != [c.lower() for c in classes]:
            raise ConfigError(f"model.aux_labels.{name}: {list(given)} differs from the label set of {key} ({classes}); "
                              f"leave it out and it is filled in")
        config.model.aux_labels[name] = classes
        main_classes = {c.lower() for c in get_label_set(config.data.label_set, config.data.labels).names}
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
