"""Requests to the server -> ``predict`` keywords, and predictions -> answers; every problem a ``RequestError``
naming the field and the reason.

What a request may carry:

- ``text``, ``speaker``: strings; ``context``: a JSON list of earlier turns, strings or ``[speaker, text]`` pairs.
- ``audio``, ``video``, ``image``: uploaded files (multipart). A string there would name a file on the server and
  is refused; so is a text field that is nothing but a file path, a URL or a media file's name.
- ``top_k``: how many classes ``top_k`` lists (default: all).

A malformed request (an unknown or repeated field, a value of the wrong kind, a path) is refused whole with 400.
What the model cannot use is judged by the recognizer, the one place that knows (``mmemo.inference.inputs``): an
input the client gave that it drops (unsupported format: 415; corrupt or empty file, empty text, silent audio:
422) refuses the request, as does a request with nothing usable (422). What only warns in ``predict`` still only
warns: a cut long input, ignored context, the silent audio track of a video given as ``video``.
"""

from __future__ import annotations

import json
import mimetypes
import re
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from mmemo.data.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from mmemo.errors import RequestError
from mmemo.inference import Prediction, check_input_types

MEDIA_FIELDS = ("audio", "video", "image")
TEXT_FIELDS = ("text", "speaker")
INPUT_FIELDS = ("text", "context", "speaker", *MEDIA_FIELDS)
_MEDIA_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES | IMAGE_SUFFIXES
# scheme://, file:, ~/, /, ./, ../, C:\, \\server: the start of a path or a URL
_PATH_START = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|file:|~[\\/]|\.{0,2}[\\/]|[a-zA-Z]:[\\/]|\\\\)")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")
# what browsers (MediaRecorder among them) send as a file's type when its name has no extension
_CONTENT_TYPES = {"audio/webm": ".webm", "video/webm": ".webm", "audio/ogg": ".ogg", "audio/wav": ".wav",
                  "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/mpeg": ".mp3", "audio/mp4": ".m4a",
                  "video/mp4": ".mp4", "video/quicktime": ".mov", "image/jpeg": ".jpg", "image/png": ".png"}
PATH_REFUSED = "a request cannot name a file on the server"


def looks_like_path(value: str) -> bool:
    """One whitespace-free token that starts like a path or a URL, or ends in a media file's extension."""
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        return False
    return bool(_PATH_START.match(value)) or PurePosixPath(value.replace("\\", "/")).suffix.lower() in _MEDIA_SUFFIXES


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"expected a string, got {type(value).__name__}", 400)
    if looks_like_path(value):
        raise RequestError(field, f"looks like a file path or URL; {PATH_REFUSED} (send the text itself, or upload "
                                  "the file as audio, video or image)", 400)
    return value


def _context(field: str, value: Any) -> list[str | tuple[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RequestError(field, f"not valid JSON ({exc.msg}); expected a list of turns: strings or "
                                      "[speaker, text] pairs", 400) from None
    if not isinstance(value, list):
        raise RequestError(field, f"expected a list of turns (strings or [speaker, text] pairs), got "
                                  f"{type(value).__name__}", 400)
    turns: list[str | tuple[str, str]] = []
    for i, turn in enumerate(value):
        if isinstance(turn, list) and len(turn) == 2:
            turns.append((_text(f"{field}[{i}][0]", turn[0]), _text(f"{field}[{i}][1]", turn[1])))
        elif isinstance(turn, str):
            turns.append(_text(f"{field}[{i}]", turn))
        else:
            raise RequestError(f"{field}[{i}]", "expected a string or a [speaker, text] pair", 400)
    return turns


def parse_top_k(value: Any, field: str = "top_k") -> int | None:
    if value is None or value == "":
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise RequestError(field, f"expected a positive integer, got {value!r}", 400) from None
    if k < 1 or (isinstance(value, float) and value != k) or isinstance(value, bool):
        raise RequestError(field, f"expected a positive integer, got {value!r}", 400)
    return k


def text_fields(values: Mapping[str, Any], prefix: str = "", allowed: tuple[str, ...] = ("text", "context", "speaker")
                ) -> dict[str, Any]:
    """``text``/``context``/``speaker`` of a JSON object or a form, checked; a media field or any other key is refused."""
    row: dict[str, Any] = {}
    for key, value in values.items():
        field = f"{prefix}{key}"
        if key in MEDIA_FIELDS:
            raise RequestError(field, f"{PATH_REFUSED}; upload the file itself in a multipart/form-data request", 400)
        if key not in allowed:
            raise RequestError(field, f"unknown field; a request takes {', '.join(allowed)}", 400)
        if value is None:
            continue
        row[key] = _context(field, value) if key == "context" else _text(field, value)
    return row


def check_row(row: dict[str, Any], prefix: str = "") -> None:
    try:
        check_input_types(**row)
    except TypeError as exc:  # "context: expected ..." names the keyword
        key, _, reason = str(exc).partition(": ")
        raise RequestError(f"{prefix}{key}", reason or str(exc), 400) from None


def upload_suffix(filename: str | None, content_type: str | None) -> str:
    """The uploaded file's extension (what the decoders go by), from its name, else from its content type."""
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    if _SUFFIX.fullmatch(suffix):
        return suffix
    kind = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(kind) or mimetypes.guess_extension(kind) or ""


def save_upload(upload: Any, folder: Path, stem: str) -> tuple[Path, str]:
    """Copy an upload (``starlette.datastructures.UploadFile``) to ``folder/<stem><suffix>``; returns the path and
    the name the client gave it (for messages). The client's name never becomes a path on the server."""
    path = folder / f"{stem}{upload_suffix(upload.filename, upload.content_type)}"
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, length=1 << 20)
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name or f"{stem} upload"
    return path, name


# -- predictions -> answers ----------------------------------------------------------------------------------------

def _dropped(pred: Prediction, modalities: list[str]) -> dict[str, str]:
    """modality -> why the recognizer dropped that input: the ``"<m> dropped: why"`` warnings, or the parts of
    ``"no usable input: <m>: why; <m>: why"`` when none was left."""
    out = {}
    for w in pred.warnings:
        m, sep, why = w.partition(" dropped: ")
        if sep and m in modalities:
            out[m] = why
    if pred.error and pred.error.startswith("no usable input: "):
        names = "|".join(re.escape(m) for m in modalities)
        for part in re.split(rf"; (?=(?:{names}): )", pred.error[len("no usable input: "):]):
            m, sep, why = part.partition(": ")
            if sep and m in modalities:
                out[m] = why
    return out


def judge(pred: Prediction, given: list[str], modalities: list[str], prefix: str = "") -> Prediction:
    """The prediction, or a ``RequestError`` for the first input the client gave that the model could not use."""
    dropped = _dropped(pred, modalities)
    for m, why in dropped.items():
        if m == "audio" and "audio" not in given:  # the audio track of a video given as `video`
            if pred.error and "video" in given:
                raise RequestError(f"{prefix}video", f"its audio track: {why}", _status(why))
            continue
        field = m if m != "vision" else ("video" if "video" in given else "image")
        raise RequestError(f"{prefix}{field}", why.removeprefix(f"{field}: "), _status(why))
    if pred.error:
        reasons = "; ".join([*pred.warnings, pred.error.removeprefix("no usable input: ")])
        field = next((f for f in given if f in INPUT_FIELDS), None)
        raise RequestError(f"{prefix}{field}" if field else None, f"nothing usable: {reasons}", 422)
    return pred


def _status(why: str) -> int:
    return 415 if "unsupported format" in why else 422


def rename(pred: Prediction, names: dict[str, str]) -> Prediction:
    """Server paths in messages -> the names the client gave its files."""
    def fix(text: str) -> str:
        for path, name in names.items():
            text = text.replace(path, name)
        return text

    pred.warnings = [fix(w) for w in pred.warnings]
    pred.error = fix(pred.error) if pred.error else pred.error
    return pred


def error_body(exc: RequestError) -> dict[str, Any]:
    return {"detail": str(exc), "field": exc.field, "reason": exc.reason}
