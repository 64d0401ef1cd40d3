"""The errors a user can cause, one typed exception each, all under ``MmemoError``.

Every message names the file, row, field or key that is wrong, so the CLI prints it as one
``mmemo: error: ...`` line and the Python API raises the same text. An exception that is not a
``MmemoError`` is a bug in mmemo, and keeps its traceback.
"""

from __future__ import annotations

import os


class MmemoError(Exception):
    """Bad input, config, data or files; the message says which and what is wrong."""


class ConfigError(MmemoError, ValueError):
    """A config key is unknown, missing or of the wrong type (the message names the dotted key and the file)."""


class DataError(MmemoError, ValueError):
    """Bad input data; the message names the file, and the row or column when there is one."""


class LabelError(MmemoError, ValueError):
    """A label that is not in the label set, or a label list that does not fit the model."""


class InputError(MmemoError, ValueError):
    """No usable input for a prediction; the message names each input and why it was unusable."""


class CheckpointError(MmemoError, RuntimeError):
    """A checkpoint (pretrained weights, a training checkpoint or a saved model) that cannot be used as it is."""


class NonFiniteLossError(MmemoError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class MediaError(MmemoError, RuntimeError):
    """A media file (or in-memory input) that cannot be used; ``reason`` is a short machine-countable key."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        super().__init__(f"{msg} ({detail})" if detail else msg)

    def __reduce__(self):  # DataLoader workers send it across processes
        return type(self), (self.path, self.reason, self.detail)


class RequestError(MmemoError, ValueError):
    """A bad request to ``mmemo serve``: ``field`` names the part of the request (``text``, ``audio``,
    ``inputs[2].context``, ``body``...), ``reason`` says what is wrong, ``status`` is the HTTP status (4xx)
    it is answered with."""

    def __init__(self, field: str | None, reason: str, status: int = 422):
        self.field = field
        self.reason = reason
        self.status = status
        super().__init__(f"{field}: {reason}" if field else reason)

    def __reduce__(self):
        return type(self), (self.field, self.reason, self.status)


__all__ = ["MmemoError", "ConfigError", "DataError", "LabelError", "InputError", "CheckpointError",
           "NonFiniteLossError", "MediaError", "RequestError"]
