"""The HTTP app (FastAPI): ``POST /predict``, ``POST /predict/batch``, ``GET /health``, ``GET /info``, and the page
at ``/``.

Safe by default: an optional bearer token guards the model's endpoints (``/``, ``/static``, ``/health`` stay
open: they tell nothing about the model); request bodies are capped (``max_upload_mb``, 413) and requests timed
(``timeout_s``: 408 while the body arrives, 503 while waiting for the model); uploads are written to a fresh
temporary folder, deleted once the model is done with them; no field may name a file on the server
(``mmemo.serve.requests``). Every refusal is a 4xx (503 when busy) with ``{"detail", "field", "reason"}``; a
500 is a bug.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mmemo.errors import RequestError
from mmemo.inference import EmotionRecognizer, Prediction
from mmemo.inference.inputs import READABLE_SUFFIXES
from mmemo.inference.prediction import ranked
from mmemo.models.card import describe_encoders
from mmemo.serve.batching import Batcher, Job, when_done
from mmemo.serve.requests import (
    INPUT_FIELDS,
    MEDIA_FIELDS,
    check_row,
    error_body,
    judge,
    parse_top_k,
    rename,
    save_upload,
    text_fields,
)

log = logging.getLogger("mmemo.serve")
STATIC = Path(__file__).with_name("static")


@dataclass
class ServeSettings:
    """The server's limits and batching (``mmemo serve --help`` gives each as an option)."""

    max_batch_size: int = 16  # inputs per forward pass
    max_wait_ms: float = 5.0  # how long the first input of a batch waits for others
    max_queue: int = 256  # inputs waiting for the model; more is a 503 (busy)
    max_upload_mb: float = 20.0  # request body size, uploads included (413 beyond)
    max_batch_inputs: int = 64  # inputs in one /predict/batch request
    timeout_s: float = 30.0  # a request's time, from its first byte to its answer
    token: str | None = None  # bearer token the model's endpoints require (None: open)
    tmp_dir: str | None = None  # where each request's upload folder is made (default: the system's)


class BodyLimit:
    """ASGI middleware: a body larger than ``max_bytes`` is refused with 413, by its Content-Length before any byte
    is read, or as soon as a streamed body passes the limit."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, size: str) -> RequestError:
        return RequestError("body", f"{size} is more than this server takes ({self.max_bytes / 2**20:g} MB, "
                                    "--max-upload-mb); send a shorter clip or a smaller file", 413)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            exc = self._error(f"the request body ({int(length) / 2**20:.1f} MB)")
            await JSONResponse(error_body(exc), status_code=exc.status)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error("the request body")
            return message

        await self.app(scope, limited, send)


def create_app(recognizer: EmotionRecognizer, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``recognizer``; run it with uvicorn (``mmemo serve``) or ``fastapi.testclient.TestClient``."""
    settings = settings or ServeSettings()
    batcher = Batcher(recognizer, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
    modalities = list(recognizer.modalities)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmemo", summary="Multimodal emotion recognition", version=_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # the API docs page loads scripts from a CDN: not by default
    app.state.batcher = batcher
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        reason = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        field = "body" if exc.status_code == 400 else None  # Starlette's own 400s are about the multipart body
        return JSONResponse({"detail": f"{field}: {reason}" if field else reason, "field": field, "reason": reason},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    def require_token(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(require_token)]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": batcher.waiting, "batches": batcher.batches, "inputs": batcher.inputs}

    info = _info(recognizer, settings)

    @app.get("/info", dependencies=guarded)
    async def model_info() -> dict[str, Any]:
        return info

    @app.post("/predict", dependencies=guarded, openapi_extra=_PREDICT_DOC)
    async def predict(request: Request) -> JSONResponse:
        """One input: multipart (text, context, speaker, uploaded audio/video/image, top_k) or JSON (text only)."""
        async with _Uploads(settings, batcher) as uploads:
            form = await uploads.read(request)
            top_k = parse_top_k(form.pop("top_k", None))
            row = await uploads.row(form, "")
            (pred,) = await uploads.predict(batcher, [row])
        pred = judge(rename(pred, uploads.names), list(row), modalities)
        pred.id = None
        return JSONResponse(_answer(pred, top_k))

    @app.post("/predict/batch", dependencies=guarded, openapi_extra=_BATCH_DOC)
    async def predict_batch(request: Request) -> JSONResponse:
        """Several inputs: JSON ``{"inputs": [{text, context, speaker, id}, ...], "top_k"}``, or multipart with an
        ``inputs`` field holding that list and files named ``audio.<i>``, ``video.<i>``, ``image.<i>``. A malformed
        request is refused whole; an input the model cannot use gets ``error``, ``field`` and ``reason``."""
        async with _Uploads(settings, batcher) as uploads:
            form = await uploads.read(request, batch=True)
            top_k = parse_top_k(form.pop("top_k", None))
            inputs = form.pop("inputs", None)
            if isinstance(inputs, str):
                try:
                    inputs = json.loads(inputs)
                except json.JSONDecodeError as exc:
                    raise RequestError("inputs", f"not valid JSON ({exc.msg})", 400) from None
            if not isinstance(inputs, list) or not inputs:
                raise RequestError("inputs", "expected a non-empty list of inputs", 400)
            if len(inputs) > settings.max_batch_inputs:
                raise RequestError("inputs", f"{len(inputs)} inputs; this server takes at most "
                                             f"{settings.max_batch_inputs} per request (--max-batch-inputs)", 413)
            files = {key: form.pop(key) for key in list(form) if key.partition(".")[0] in MEDIA_FIELDS}
            if form:
                raise RequestError(next(iter(form)), "unknown field; a batch request takes inputs, top_k and files "
                                                     "named audio.<i>, video.<i>, image.<i>", 400)
            rows = []
            for i, item in enumerate(inputs):
                if not isinstance(item, dict):
                    raise RequestError(f"inputs[{i}]", f"expected an object, got {type(item).__name__}", 400)
                item_id = item.get("id", i)
                if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
                    raise RequestError(f"inputs[{i}].id", "expected a string or an integer", 400)
                fields = {k: v for k, v in item.items() if k != "id"}
                mine = {f: files.pop(f"{f}.{i}") for f in MEDIA_FIELDS if f"{f}.{i}" in files}
                rows.append({"id": str(item_id), **await uploads.row({**fields, **mine}, f"inputs[{i}].", stem=f"{i}")})
            if files:
                key = next(iter(files))
                raise RequestError(key, f"no input {key.partition('.')[2]!r} in inputs (0 to {len(inputs) - 1})", 400)
            preds = await uploads.predict(batcher, rows)
        answers = []
        for i, (row, pred) in enumerate(zip(rows, preds)):
            try:
                answers.append(_answer(judge(rename(pred, uploads.names), [k for k in row if k != "id"], modalities,
                                             f"inputs[{i}]."), top_k))
            except RequestError as exc:
                answers.append({"id": row["id"], "label": None, "error": str(exc), "field": exc.field,
                                "reason": exc.reason, "status": exc.status})
        return JSONResponse({"predictions": answers})

    return app


class _Uploads:
    """One request's body and uploads: read within the time limit, files in a temporary folder that is deleted
    when the request ends and the model is done with them."""

    def __init__(self, settings: ServeSettings, batcher: Batcher):
        self.settings = settings
        self.batcher = batcher
        self._arriving = False
        self.names: dict[str, str] = {}  # server path -> the client's name for the file
        self.jobs: list[Job] = []
        self._form: Any = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._deadline = 0.0

    async def __aenter__(self) -> _Uploads:
        self._deadline = asyncio.get_running_loop().time() + self.settings.timeout_s
        self._arriving = True  # the batcher may wait a little for this request's inputs
        self.batcher.arriving += 1
        return self

    def _arrived(self) -> None:
        if self._arriving:
            self._arriving = False
            self.batcher.arriving -= 1

    async def __aexit__(self, *exc: Any) -> None:
        self._arrived()
        if self._form is not None:
            await self._form.close()
        tmp = self._tmp
        if tmp is not None:
            when_done(self.jobs, tmp.cleanup)

    @property
    def folder(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mmemo-serve-", dir=self.settings.tmp_dir)
        return Path(self._tmp.name)

    def _left(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    async def read(self, request: Request, batch: bool = False) -> dict[str, Any]:
        """The body as ``{field: value}``: a JSON object, or a multipart form (strings and ``UploadFile``s)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            async with asyncio.timeout(self._left()):
                if kind == "application/json":
                    return self._json(await request.body())
                if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    self._form = await request.form(max_files=3 * self.settings.max_batch_inputs if batch else 3,
                                                    max_fields=16, max_part_size=1 << 20)
                    return self._fields(self._form)
        except TimeoutError:
            raise RequestError("body", f"not received within {self.settings.timeout_s:g} s (--timeout)", 408) from None
        except ClientDisconnect:  # nobody to answer; a 400 keeps it out of the error log
            raise RequestError("body", "the client went away before sending all of it", 400) from None
        raise RequestError("body", "expected multipart/form-data, application/x-www-form-urlencoded or application/json, "
                                   f"got {kind or 'no content type'}", 415)

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError("body", f"not valid JSON ({getattr(exc, 'msg', exc)})", 400) from None
        if not isinstance(value, dict):
            raise RequestError("body", f"expected a JSON object, got {type(value).__name__}", 400)
        return value

    @staticmethod
    def _fields(form: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key in fields:
                raise RequestError(key, "given more than once", 400)
            fields[key] = value
        return fields

    async def row(self, fields: dict[str, Any], prefix: str, stem: str = "") -> dict[str, Any]:
        """``predict`` keywords from one input's fields: text checked, uploads saved to the temporary folder."""
        media = {k: fields.pop(k) for k in list(fields) if k in MEDIA_FIELDS}
        files = {k: v for k, v in fields.items() if isinstance(v, UploadFile)}
        if files:
            raise RequestError(f"{prefix}{next(iter(files))}", "expected a form field, got a file", 400)
        row = text_fields(fields, prefix)
        for key, value in media.items():
            if not isinstance(value, UploadFile):
                raise RequestError(f"{prefix}{key}", "expected an uploaded file; a request cannot name a file on the "
                                                     "server", 400)
            if value.size is not None and value.size <= 1 << 20:  # still in memory: copying it takes microseconds
                path, name = save_upload(value, self.folder, f"{key}{stem}")
            else:
                path, name = await run_in_threadpool(save_upload, value, self.folder, f"{key}{stem}")
            self.names[str(path)] = name
            row[key] = str(path)
        check_row(row, prefix)
        if not any(k in row for k in ("text", *MEDIA_FIELDS)):
            raise RequestError(prefix.rstrip(".") or None, "nothing to predict from: give text, or upload audio, "
                                                           "video or an image", 422)
        return row

    async def predict(self, batcher: Batcher, rows: list[dict[str, Any]]) -> list[Prediction]:
        """Queue the rows on the model and wait for them, within what is left of the time limit."""
        self._arrived()
        self.jobs = batcher.submit(rows)
        futures = [job.future for job in self.jobs]
        try:
            async with asyncio.timeout(max(self._left(), 0.0)):
                return list(await asyncio.gather(*(asyncio.shield(f) for f in futures)))
        except TimeoutError:
            for job in self.jobs:
                if not job.started:
                    job.future.cancel()
            raise RequestError(None, f"no answer within {self.settings.timeout_s:g} s (--timeout); the server is "
                                     "busy, retry shortly", 503) from None


def _answer(pred: Prediction, top_k: int | None) -> dict[str, Any]:
    pred.top_k = ranked(pred.probs, top_k)
    return pred.to_dict()


def _version() -> str:
    try:
        return version("mmemo")
    except PackageNotFoundError:
        return "unknown"


def _info(recognizer: EmotionRecognizer, settings: ServeSettings) -> dict[str, Any]:
    card = recognizer.card
    config = recognizer.config
    accepts = {"text": "text" in recognizer.modalities}
    if "audio" in recognizer.modalities:
        accepts["audio"] = sorted(READABLE_SUFFIXES["audio"])
    if "vision" in recognizer.modalities:
        accepts["video"] = sorted(READABLE_SUFFIXES["video"])
        accepts["image"] = sorted(READABLE_SUFFIXES["image"])
    elif "audio" in recognizer.modalities:
        accepts["video"] = sorted(READABLE_SUFFIXES["audio"] - READABLE_SUFFIXES["image"])  # its audio track
    limits = asdict(settings)
    limits.pop("token")
    limits.pop("tmp_dir")
    return {
        "name": card.get("name") or config.name,
        "labels": recognizer.labels,
        "modalities": recognizer.modalities,
        "encoders": card.get("encoders") or describe_encoders(config),
        "fusion": config.model.fusion.name,
        "training_data": card.get("training_data"),
        "metrics": card.get("metrics") or {},
        "accepts": accepts,
        "max_audio_seconds": config.data.max_audio_seconds if "audio" in recognizer.modalities else None,
        "num_frames": config.data.num_frames if "vision" in recognizer.modalities else None,
        "device": str(recognizer.device),
        "dtype": recognizer.dtype,
        "limits": limits,
        "token_required": settings.token is not None,
        "mmemo_version": _version(),
    }


_PREDICT_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"}, "context": {"type": "string", "description": "JSON list of earlier turns"},
        "speaker": {"type": "string"}, "top_k": {"type": "integer"},
        **{f: {"type": "string", "format": "binary"} for f in MEDIA_FIELDS}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"}, "context": {"type": "array", "items": {}}, "speaker": {"type": "string"},
        "top_k": {"type": "integer"}}, "required": ["text"]}}}}}
_BATCH_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "inputs": {"type": "array", "items": {"type": "object", "properties": {
            f: {"type": "string"} for f in ("id", *[f for f in INPUT_FIELDS if f not in MEDIA_FIELDS])}}},
        "top_k": {"type": "integer"}}, "required": ["inputs"]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "inputs": {"type": "string", "description": "JSON list of inputs; files named audio.<i>, video.<i>, image.<i>"},
        "top_k": {"type": "integer"}}}}}}}
