"""A generic manifest reader: any CSV or JSONL of text/audio/video/image paths and labels, by config.

Column names are configurable so that a dataset's own ``labels.csv`` is trained on by writing a config,
not code. Media paths are relative to the manifest's folder unless absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mmemo.config import DataConfig
from mmemo.data.cells import media_value
from mmemo.data.examples import Example, Splits
from mmemo.data.splits import SplitConfig, split_examples
from mmemo.data.tables import read_table
from mmemo.errors import ConfigError, DataError
from mmemo.registry import register_reader

MANIFEST_FIELDS = ("id", "text", "audio", "video", "image", "label", "speaker", "dialogue", "utterance")
MEDIA_FIELDS = ("audio", "video", "image")


@dataclass
class ManifestConfig(DataConfig):
    """A CSV or JSONL table of examples; media paths inside it are relative to its own folder."""

    path_fields: ClassVar[tuple[str, ...]] = ("path", "paths")

    source: str = "manifest"
    path: str | None = None  # one table holding every split (see split_column and splits)
    paths: dict[str, str] = field(default_factory=dict)  # or one table per split: {train: a.csv, dev: b.csv}
    # field -> column, for fields named otherwise in the table; fields: id, text, audio, video, image, label,
    # speaker, dialogue, utterance (a column named like a field needs no entry)
    columns: dict[str, str] = field(default_factory=dict)
    split_column: str | None = None  # the column saying which split a row is in (with path)
    splits: dict[str, list[str]] = field(default_factory=dict)  # split -> values of split_column; default: as written
    split: SplitConfig | None = None  # or divide one table without a split column into train/dev/test

    def validate(self, key: str) -> None:
        if not self.path and not self.paths:
            raise ConfigError(f"{key}: a manifest needs path (one table) or paths (one table per split)")
        if self.path and self.paths:
            raise ConfigError(f"{key}: set either path or paths, not both")
        if self.split is not None and (self.paths or self.split_column):
            raise ConfigError(f"{key}.split: divides one table without a split column; remove split_column/paths "
                              "or split")
        for f in self.columns:
            if f not in MANIFEST_FIELDS:
                raise ConfigError(f"{key}.columns.{f}: unknown field; allowed: {', '.join(MANIFEST_FIELDS)}")


def read_manifest_file(
    path: str | Path, columns: dict[str, str] | None = None, split: str | None = None, require_label: bool = True
) -> list[tuple[str | None, Example]]:
    """Examples of one manifest file, each with the raw value of its row's split column (if asked);
    ``require_label=False`` reads inputs to predict on."""
    path = Path(path)
    columns = dict(columns or {})
    table = read_table(path)
    header = set(table.columns)
    for f in columns:
        if f not in MANIFEST_FIELDS:
            raise DataError(f"{path}: unknown field {f!r} in the column map; fields: {', '.join(MANIFEST_FIELDS)}")
    # A field maps to the column named in `columns`, else to a column of the field's own name.
    mapping = {f: columns.get(f, f) for f in MANIFEST_FIELDS}
    for f, col in columns.items():
        if col not in header:
            raise DataError(f"{path}: column '{col}' (for {f}) not found; columns are {', '.join(table.columns) or 'none'}")
    mapping = {f: c for f, c in mapping.items() if c in header}
    if not any(f in mapping for f in ("text", *MEDIA_FIELDS)):
        raise DataError(f"{path}: no text, audio, video or image column (columns: {', '.join(table.columns) or 'none'}); "
                        "map one in data.columns")
    if "label" not in mapping and require_label:
        raise DataError(f"{path}: no label column; set data.columns.label (columns: {', '.join(table.columns)})")
    if not table.rows:
        raise DataError(f"{path}: no rows, only a header")
    base = path.parent
    out = []
    first_line: dict[str, int] = {}
    for lineno, row in table.rows:
        where = f"{path}: line {lineno}"

        def get(f: str, row: dict = row) -> str:
            return row.get(mapping[f], "") if f in mapping else ""

        utt = get("utterance")
        try:
            utt_id = int(utt) if utt else None
        except ValueError:
            raise DataError(f"{where}: utterance order must be an integer, got {utt!r}") from None
        ex_id = get("id") or f"{path.stem}/{lineno}"
        if ex_id in first_line:
            raise DataError(f"{where}: duplicate id {ex_id!r} (first on line {first_line[ex_id]})")
        first_line[ex_id] = lineno
        dialogue = get("dialogue") or None
        out.append(
            (
                split,
                Example(
                    id=ex_id,
                    label=get("label") or None,
                    text=get("text") or None,  # an empty cell is no value, as for media
                    audio=media_value(get("audio"), where, base),
                    video=media_value(get("video"), where, base),
                    image=media_value(get("image"), where, base),
                    speaker=get("speaker") or None,
                    dialogue_id=dialogue,
                    utterance_id=utt_id,
                    meta={"source": where, "row": row},
                ),
            )
        )
    return out


def read_manifest(
    path: str | Path | None = None,
    paths: dict[str, str] | None = None,
    columns: dict[str, str] | None = None,
    split_column: str | None = None,
    splits: dict[str, list[str]] | None = None,
) -> Splits:
    """One table per split (``paths``), or one table split by the values of ``split_column``."""
    out: dict[str, list[Example]] = {}
    if paths:
        for name, p in paths.items():
            out[name] = [ex for _, ex in read_manifest_file(p, columns)]
        return Splits(out)
    if path is None:
        raise DataError("manifest: give a path or per-split paths")
    items = read_manifest_file(path, columns)
    if split_column is None:
        return Splits({"train": [ex for _, ex in items]})
    value_to_split: dict[str, str] = {}
    for name, values in (splits or {}).items():
        for v in values:
            value_to_split[str(v)] = name
    for _, ex in items:
        row = ex.meta["row"]
        if split_column not in row:
            raise DataError(f"{path}: split column '{split_column}' not found")
        value = row[split_column]
        name = value_to_split.get(value, None if splits else value)
        if name is None:
            continue  # a value no split asked for (e.g. a held-out speaker)
        out.setdefault(name, []).append(ex)
    for name in splits or {}:
        out.setdefault(name, [])
    return Splits(out)


@register_reader("manifest", config=ManifestConfig)
def read(config: ManifestConfig) -> Splits:
    """A CSV or JSONL table of text, media paths and labels, one table or one per split."""
    splits = read_manifest(config.path, config.paths, config.columns, config.split_column, config.splits)
    if config.split is not None:
        splits = split_examples(splits["train"], config.split)
    splits.columns = {f: config.columns.get(f, f) for f in MANIFEST_FIELDS}
    return splits
