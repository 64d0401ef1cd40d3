"""The values a ``datasets`` table holds for media, as mmemo's decoders read them.

``datasets`` gives an Audio, Video or Image cell as ``{"path", "bytes"}`` when decoding is off, as a torchcodec
``AudioDecoder``/``VideoDecoder`` or a PIL image when it is on, or as ``{"array", "sampling_rate"}`` (an audio
struct); a plain column holds a path or bytes. One function turns each into what ``mmemo.data.media`` decodes
(a path, ``MediaBytes`` named by the row, ``(array, rate)``), so that a dataset's media go through the same
decoding, embedding cache and media report as files do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmemo.data.media import MediaBytes, is_decoder, is_encoded, is_url


def media_value(value: Any, where: str, base: str | Path | None = None) -> Any:
    """``value`` as mmemo's decoders take it; ``where`` names it in messages (``hf train row 12: audio``), ``base``
    is the folder relative paths are read from. A decoder ``datasets`` made gives back what it was made from."""
    if value is None:
        return None
    if is_decoder(value):
        encoded = getattr(value, "_hf_encoded", None)
        return media_value(encoded, where, base) if isinstance(encoded, Mapping) else value
    if isinstance(value, Mapping):
        if "array" in value and "sampling_rate" in value:
            return (np.asarray(value["array"]), int(value["sampling_rate"]))
        data, path = value.get("bytes"), value.get("path")
        if data:
            return MediaBytes(bytes(data), f"{where}{f' ({Path(path).name})' if path else ''}")
        return media_value(path, where, base)
    if is_encoded(value):
        return MediaBytes(bytes(value), where) if len(value) else None
    if isinstance(value, str):  # a path relative to ``base``; a URL stays as written, to be refused with its reason
        if not value.strip():
            return None
        if is_url(value) or base is None:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else Path(base) / p)
    return value  # PIL images, arrays, lists of frames: read as the Python API reads them


__all__ = ["media_value"]
