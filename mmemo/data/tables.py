"""Reading CSV and JSONL tables robustly: encoding quirks fixed, rows numbered for error messages."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mmemo.data.text import fix_text


class DataError(ValueError):
    """Bad input data; the message names the file, and the row or column when there is one."""


def read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_table(path: str | Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV or JSONL file as ``(line_number, {column: value})``, text fields cleaned."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    text = read_text_file(path)
    rows: list[tuple[int, dict[str, str]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        columns: set[str] = set()
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object")
            row = {str(k): ("" if v is None else (fix_text(v) if isinstance(v, str) else str(v))) for k, v in obj.items()}
            columns.update(row)
            rows.append((lineno, row))
        missing = [c for c in required if c not in columns]
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in required if c not in header]
        if not missing:
            for row in reader:
                # csv line numbers count physical lines, so quoted multi-line fields stay correct.
                rows.append((reader.line_num, {k: fix_text(v or "") for k, v in row.items() if k is not None}))
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows
