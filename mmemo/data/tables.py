"""Reading CSV and JSONL tables strictly: no row lost, no text silently re-encoded, every error named by line.

- **Encoding.** A file is decoded as UTF-8 (a BOM is dropped). Only when the whole file is not UTF-8 (no
  multi-byte UTF-8 sequence in it, as in a table saved by Excel on Windows) is it decoded as cp1252, MELD's
  legacy encoding, and the log says so. A file that mixes the two (valid UTF-8 accents on some lines, a
  stray cp1252 byte on another) is an error naming the first bad line and its byte offset: decoding it
  either way would turn the other half of its text into mojibake.
- **CSV.** Parsed with the csv module in strict mode: an unterminated quote, a quote in the middle of a
  field or a row with more or fewer fields than the header is an error naming its line. Quoted fields may
  span lines; blank lines are skipped.
- **JSONL.** One object per line; strings must be valid Unicode (JSON's ``\\ud800`` escapes can encode
  lone surrogates, which no tokenizer accepts).

The legacy code points inside MELD's own files (valid UTF-8, but U+0092 for an apostrophe) are mended by
``fix_text``, field by field.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from mmemo.data.text import fix_text, is_valid_unicode
from mmemo.errors import DataError

log = logging.getLogger(__name__)

# A multi-byte UTF-8 sequence: its presence shows the file was written as UTF-8.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


@dataclass
class Table:
    """A table's columns (the CSV header, or every key seen in a JSONL file) and its rows, each with the
    line it starts on."""

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def _line_and_column(raw: bytes, offset: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + 1
    return line, offset - (raw.rfind(b"\n", 0, offset) + 1)


def read_text_file(path: Path) -> str:
    """The file's text: UTF-8, or cp1252 when nothing in it is UTF-8; a mix of the two is a DataError."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    line, column = _line_and_column(raw, bad)
    if _UTF8_MULTIBYTE.search(raw):
        raise DataError(f"{path}: line {line}: byte 0x{raw[bad]:02x} at offset {bad} (column {column + 1}) is not "
                        "UTF-8, while other lines are UTF-8; the file mixes encodings. Re-save it as UTF-8")
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(raw, exc.start)
        raise DataError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is neither UTF-8 "
                        "nor cp1252; re-save the file as UTF-8") from None
    log.info("%s is not UTF-8 (first non-UTF-8 byte on line %d); read it as cp1252 (Windows-1252)", path, line)
    return text


def _check_unicode(value: str, where: str) -> str:
    if not is_valid_unicode(value):
        raise DataError(f"{where}: text is not valid Unicode (it holds a lone surrogate)")
    return value


def read_table(path: str | Path, required: tuple[str, ...] = ()) -> Table:
    """Every row of a CSV or JSONL file, text fields cleaned by ``fix_text``; ``required`` columns must exist."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    text = read_text_file(path)
    table = _read_jsonl(path, text) if path.suffix.lower() in (".jsonl", ".ndjson") else _read_csv(path, text)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(table.columns) or 'none'})")
    return table


def _read_jsonl(path: Path, text: str) -> Table:
    columns: dict[str, None] = {}
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        row = {}
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                raise DataError(f"{where}: field {k!r} is a JSON {type(v).__name__}; expected a string or a number")
            row[str(k)] = "" if v is None else (fix_text(_check_unicode(v, f"{where}: field {k!r}"))
                                                if isinstance(v, str) else str(v))
        columns.update(dict.fromkeys(row))
        rows.append((lineno, row))
    return Table(path, list(columns), rows)


def _read_csv(path: Path, text: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows = []
    line = 1  # the line the next record starts on
    try:
        for record in reader:
            start, line = line, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip() and header is not None):
                continue  # a blank line
            if header is None:
                header = [h.strip() for h in record]
                dupes = sorted({h for h in header if header.count(h) > 1})
                if dupes:
                    raise DataError(f"{path}: line {start}: duplicate column name(s) {', '.join(map(repr, dupes))}")
                continue
            if len(record) != len(header):
                raise DataError(f"{path}: line {start}: {len(record)} fields where the header has {len(header)} "
                                "(an unquoted comma, or a quote left open on an earlier line?)")
            rows.append((start, {h: fix_text(v) for h, v in zip(header, record)}))
    except csv.Error as exc:
        raise DataError(f"{path}: line {line}: malformed CSV ({exc}); a quote left open swallows the lines after "
                        "it") from None
    return Table(path, header or [], rows)
