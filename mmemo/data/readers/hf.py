"""The Hugging Face ``datasets`` reader: a Hub dataset, a folder builder (``audiofolder``/``videofolder``/
``imagefolder`` with a ``metadata.csv``), a Parquet/CSV/JSON file or a ``save_to_disk`` folder, by config.

Media columns are read with decoding off (``Audio/Video/Image(decode=False)``: a path or the file's bytes), so
they go through mmemo's own decoding, embedding cache and media report exactly as files do; bytes are keyed by
their content (``media_identity``). A cell that cannot be decoded is reported by its row and the run goes on.
Labels are a string column, or a ``ClassLabel`` whose names become the label set when the config names none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mmemo.config import DataConfig
from mmemo.data.cells import media_value
from mmemo.data.examples import Example, Splits, Turn
from mmemo.data.splits import SplitConfig, split_examples
from mmemo.data.text import fix_text
from mmemo.errors import ConfigError, DataError
from mmemo.registry import register_reader

log = logging.getLogger(__name__)

HF_FIELDS = ("id", "text", "audio", "video", "image", "label", "speaker", "dialogue", "utterance", "context")
MEDIA_FIELDS = ("audio", "video", "image")
FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
# mmemo's split -> the names datasets commonly give it, in order of preference
SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}


@dataclass
class HFConfig(DataConfig):
    """A Hugging Face ``datasets`` dataset: a Hub id or builder (``path``), or a ``save_to_disk`` folder
    (``load_from_disk``). With no ``label_set`` or ``labels``, a ClassLabel column's names are the classes."""

    # a Hub id or builder name stays as written unless a file or folder of that name exists
    path_fields: ClassVar[tuple[str, ...]] = ("path", "data_dir", "load_from_disk", "data_files")

    source: str = "hf"
    label_set: str | None = None
    # a Hub id (works offline from the local cache), a builder (audiofolder, videofolder, imagefolder, csv,
    # parquet, json) with data_dir or data_files, a local dataset folder, or one Parquet/CSV/JSON(L) file
    path: str | None = None
    name: str | None = None  # the dataset's configuration (subset) name
    data_dir: str | None = None  # the folder a builder reads (audiofolder: the clips and metadata.csv)
    data_files: dict[str, str] = field(default_factory=dict)  # dataset split -> file (or glob) for a file builder
    revision: str | None = None  # a Hub revision (branch, tag or commit)
    load_from_disk: str | None = None  # a folder written by Dataset(Dict).save_to_disk, instead of path
    # mmemo split -> the dataset's split name; default: train, dev (or validation), test as the dataset names them
    splits: dict[str, str] = field(default_factory=dict)
    # field -> column, for fields named otherwise in the dataset; fields: id, text, audio, video, image, label,
    # speaker, dialogue, utterance, context (a column named like a field needs no entry)
    columns: dict[str, str] = field(default_factory=dict)
    split: SplitConfig | None = None  # divide a dataset without dev/test splits into train/dev/test

    def validate(self, key: str) -> None:
        if not self.path and not self.load_from_disk:
            raise ConfigError(f"{key}: an hf source needs path (a Hub id, builder or file) or load_from_disk (a folder)")
        if self.path and self.load_from_disk:
            raise ConfigError(f"{key}: set either path or load_from_disk, not both")
        for f in self.columns:
            if f not in HF_FIELDS:
                raise ConfigError(f"{key}.columns.{f}: unknown field; allowed: {', '.join(HF_FIELDS)}")
        for s in self.splits:
            if s not in SPLIT_NAMES:
                raise ConfigError(f"{key}.splits.{s}: unknown split; allowed: {', '.join(SPLIT_NAMES)}")


def load_dataset_dict(config: HFConfig) -> tuple[dict[str, Any], Path | None]:
    """The dataset's splits by their own names, and the folder relative media paths are read from."""
    import datasets

    if config.load_from_disk:
        folder = Path(config.load_from_disk)
        if not folder.exists():
            raise DataError(f"data.load_from_disk: {folder} not found")
        loaded = datasets.load_from_disk(str(folder))
        return (dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}), folder
    path = Path(config.path).expanduser()
    kwargs: dict[str, Any] = {"name": config.name, "revision": config.revision}
    base = Path(config.data_dir) if config.data_dir else None
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"data.path: {path}: not a dataset file ({', '.join(FILE_BUILDERS)})")
        args, kwargs["data_files"], base = (builder,), {"train": str(path)}, path.parent
    else:
        args = (str(path) if path.exists() else config.path,)
        if path.is_dir():
            base = base or path
    if config.data_dir:
        kwargs["data_dir"] = config.data_dir
    if config.data_files:
        kwargs["data_files"] = dict(config.data_files)
        base = base or Path(next(iter(config.data_files.values()))).parent
    try:
        loaded = datasets.load_dataset(*args, **{k: v for k, v in kwargs.items() if v is not None})
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise DataError(f"data.path: cannot load {config.path!r} with datasets ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:300]})") from None
    return dict(loaded), base


def pick_splits(available: list[str], wanted: dict[str, str]) -> dict[str, str]:
    """mmemo split -> the dataset's split: as configured (an unknown name is an error naming those there are),
    else by the usual names."""
    if wanted:
        for mine, theirs in wanted.items():
            if theirs not in available:
                raise DataError(f"data.splits.{mine}: the dataset has no split {theirs!r}; splits: {', '.join(available)}")
        return dict(wanted)
    out = {}
    for mine, names in SPLIT_NAMES.items():
        found = next((n for n in names if n in available), None)
        if found is not None:
            out[mine] = found
    if "train" not in out:
        raise DataError(f"the dataset has no train split; map one in data.splits (splits: {', '.join(available)})")
    return out


def _undecoded(ds: Any, columns: list[str]) -> Any:
    """``ds`` with its Audio, Video and Image columns read as ``{"path", "bytes"}`` instead of decoded."""
    from datasets import Audio, Image, Video

    for col in columns:
        feature = ds.features.get(col)
        if isinstance(feature, (Audio, Video, Image)) and feature.decode:
            ds = ds.cast_column(col, type(feature)(decode=False))
    return ds


def column_map(column_names: list[str], columns: dict[str, str], where: str) -> dict[str, str]:
    """field -> column: the configured ones (each must exist: the error names it and those there are), then
    the columns named like a field."""
    for f, col in columns.items():
        if col not in column_names:
            raise DataError(f"{where}: column {col!r} (for {f}) not found; columns are {', '.join(column_names)}")
    mapping = {f: columns.get(f, f) for f in HF_FIELDS}
    return {f: c for f, c in mapping.items() if c in column_names}


def _class_names(ds: Any, column: str | None) -> list[str] | None:
    from datasets import ClassLabel

    feature = ds.features.get(column) if column else None
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _class_name(value: Any, names: list[str] | None, column: str, where: str) -> str | None:
    """A label, speaker or dialogue cell as a name: a ClassLabel's integer by its names (-1, datasets' "no
    label", is none). ``where`` names the row and field in the error."""
    if value is None:
        return None
    if names is not None and not isinstance(value, str):
        index = int(value)
        if index == -1:
            return None
        if not 0 <= index < len(names):
            raise DataError(f"{where} {index} is outside the ClassLabel column {column!r} "
                            f"(names: {', '.join(names)})")
        return names[index]
    return str(value).strip() or None


def _text(value: Any) -> str | None:
    return fix_text(value) if isinstance(value, str) and value.strip() else None


def read_split(ds: Any, split: str, columns: dict[str, str], base: Path | None, source: str = "hf",
               require_label: bool = True) -> tuple[list[Example], dict[str, str], list[str] | None]:
    """One split's examples, the field -> column map used, and the label column's ClassLabel names (if any)."""
    where = f"{source} (split {split})"
    mapping = column_map(list(ds.column_names), columns, where)
    if not any(f in mapping for f in ("text", *MEDIA_FIELDS)):
        raise DataError(f"{where}: no text, audio, video or image column (columns: {', '.join(ds.column_names)}); "
                        "map one in data.columns")
    if require_label and "label" not in mapping:
        raise DataError(f"{where}: no label column; set data.columns.label (columns: {', '.join(ds.column_names)})")
    ds = _undecoded(ds.select_columns(list(dict.fromkeys(mapping.values()))), [mapping[f] for f in MEDIA_FIELDS
                                                                              if f in mapping])
    label_names = _class_names(ds, mapping.get("label"))
    speaker_names, dialogue_names = _class_names(ds, mapping.get("speaker")), _class_names(ds, mapping.get("dialogue"))
    examples, first_row = [], {}
    for row_index, row in enumerate(ds):
        at = f"{source} row {row_index}"

        def get(f: str, row: dict = row) -> Any:
            return row.get(mapping[f]) if f in mapping else None

        ex_id = str(get("id")) if get("id") is not None else f"{split}/{row_index}"
        if ex_id in first_row:
            raise DataError(f"{at}: duplicate id {ex_id!r} (first in row {first_row[ex_id]})")
        first_row[ex_id] = row_index
        utt = get("utterance")
        try:
            utt = int(utt) if utt is not None and str(utt).strip() else None
        except ValueError:
            raise DataError(f"{at}: utterance order must be an integer, got {utt!r}") from None
        context = get("context") or ()
        if isinstance(context, str):
            context = [context]
        examples.append(Example(
            id=ex_id,
            label=_class_name(get("label"), label_names, mapping.get("label", ""), f"{at}: label"),
            text=_text(get("text")),
            **{f: media_value(get(f), f"{at}: {f} column {mapping[f]!r}" if f in mapping else at, base)
               for f in MEDIA_FIELDS},
            speaker=_class_name(get("speaker"), speaker_names, mapping.get("speaker", ""), f"{at}: speaker"),
            dialogue_id=_class_name(get("dialogue"), dialogue_names, mapping.get("dialogue", ""), f"{at}: dialogue"),
            utterance_id=utt,
            context_before=tuple(Turn(None, str(t)) for t in context if str(t).strip()),
            meta={"source": at, "split": split},
        ))
    return examples, mapping, label_names


def read_hf(config: HFConfig) -> Splits:
    loaded, base = load_dataset_dict(config)
    chosen = pick_splits(list(loaded), config.splits)
    if config.split is not None and len(chosen) > 1:
        raise DataError(f"data.split: the dataset has its own splits ({', '.join(chosen.values())}); remove data.split "
                        "or map a single split in data.splits")
    out: dict[str, list[Example]] = {}
    labels, used = None, {}
    for mine, theirs in chosen.items():
        examples, used, names = read_split(loaded[theirs], mine, config.columns, base, f"hf {theirs}")
        out[mine] = examples
        labels = labels or names
    ignored = sorted(set(loaded) - set(chosen.values()))
    if ignored:
        log.info("hf: dataset split(s) %s not used (map them in data.splits)", ", ".join(ignored))
    splits = split_examples(out["train"], config.split) if config.split is not None else Splits(out)
    splits.labels, splits.columns = labels, used
    return splits


@register_reader("hf", config=HFConfig)
def read(config: HFConfig) -> Splits:
    """A Hugging Face datasets dataset (Hub, audiofolder/videofolder/imagefolder, Parquet/CSV/JSON, save_to_disk).
    Here ``label_set`` defaults to null: a ClassLabel label column's names are the classes unless label_set or
    labels says otherwise."""
    return read_hf(config)
