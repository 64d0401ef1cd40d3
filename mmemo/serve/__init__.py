"""``mmemo serve``: a saved model behind an HTTP API (FastAPI + uvicorn), concurrent requests batched on the
model, and a page at ``/`` to try it in the browser. Needs the ``serve`` extra: ``pip install "mmemo[serve]"``.

- ``mmemo.serve.app``: the app, its limits and its endpoints.
- ``mmemo.serve.batching``: requests -> batches -> ``predict_batch`` in a worker thread.
- ``mmemo.serve.requests``: request fields -> ``predict`` keywords; predictions -> answers or 4xx.
- ``static/``: the page (plain HTML and JavaScript, no build step).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from mmemo.errors import ConfigError
from mmemo.inference import EmotionRecognizer

log = logging.getLogger("mmemo.serve")
TOKEN_ENV = "MMEMO_SERVE_TOKEN"

try:
    from mmemo.serve.app import ServeSettings, create_app
except ImportError as exc:  # the serve extra is optional
    _MISSING: ImportError | None = exc
else:
    _MISSING = None


def _require() -> None:
    if _MISSING is not None:
        raise ConfigError(f"mmemo serve needs FastAPI, uvicorn and python-multipart ({_MISSING}); install them with: "
                          "pip install \"mmemo[serve]\"")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, device: str | None = None, dtype: str | None = None,
          allow_pickle: bool = False, threads: int | None = None, log_level: str = "info", **settings: Any) -> None:
    """Load ``model`` (a run folder, a saved model folder or a Hub id) and serve it until interrupted. ``settings``:
    the fields of ``ServeSettings``; ``token`` defaults to ``$MMEMO_SERVE_TOKEN``. ``threads``: torch's threads on
    the CPU (on a CPU shared with other work, 1 avoids threads waiting for each other on every small operation)."""
    _require()
    import torch
    import uvicorn

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads: expected at least 1, got {threads}")
        torch.set_num_threads(threads)

    options = ServeSettings(**settings)
    if options.token is None:
        options.token = os.environ.get(TOKEN_ENV) or None
    recognizer = EmotionRecognizer.from_pretrained(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    if not is_loopback(host) and options.token is None:
        log.warning("serving on %s without a token: anyone who can reach this address can use the model "
                    "(--token or $%s)", host, TOKEN_ENV)
    # each answer carries its warnings: predict_batch's summary of them, once per batch, would only fill the log
    logging.getLogger("mmemo").addFilter(lambda record: not str(record.msg).startswith("predict_batch: "))
    app = create_app(recognizer, options)
    shown = f"[{host}]" if ":" in host else host
    print(f"mmemo: serving {model} ({', '.join(recognizer.modalities)}; {recognizer.dtype} on {recognizer.device}) "
          f"at http://{shown}:{port}/ {'(bearer token required)' if options.token else ''}".rstrip(), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)


__all__ = ["TOKEN_ENV", "ServeSettings", "create_app", "is_loopback", "serve"]
