"""Concurrent requests batched on the model: an ``asyncio.Queue`` of inputs, and one task that takes up to
``max_batch_size`` of them (waiting at most ``max_wait_ms`` after the first for more, and only while other
requests are on their way: a lone request does not wait) and runs them through
``EmotionRecognizer.predict_batch`` in a worker thread, so the event loop keeps taking requests meanwhile. While
the model runs one batch, the next one gathers in the queue: under load batches fill without any wait.

An input whose request gave up (its time limit) before the model took it is skipped; one the model already
took finishes, and its files are deleted then (``when_done``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mmemo.errors import RequestError
from mmemo.inference import EmotionRecognizer, Prediction
from mmemo.serve.requests import MEDIA_FIELDS

log = logging.getLogger("mmemo.serve")


@dataclass
class Job:
    row: dict[str, Any]  # predict keywords, with an "id"
    future: asyncio.Future
    started: bool = False  # taken by the model: it finishes even when its request gave up


def when_done(jobs: list[Job], callback: Callable[[], None]) -> None:
    """Run ``callback`` once the model is done with every input of ``jobs`` that it took: now if none is running
    (a job that was not taken yet must have been cancelled by the caller, and is never taken)."""
    running = [job.future for job in jobs if job.started and not job.future.done()]
    if not running:
        callback()
        return
    left = len(running)

    def one_done(_: asyncio.Future) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            callback()

    for future in running:
        future.add_done_callback(one_done)


class Batcher:
    def __init__(self, recognizer: EmotionRecognizer, max_batch_size: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 256):
        if max_batch_size < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1, max_wait_ms at least 0")
        self.recognizer = recognizer
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.batches = 0  # counters for /health
        self.inputs = 0
        self.arriving = 0  # requests being received, not queued yet: worth waiting for
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmemo-model")
        self._task = asyncio.create_task(self._run(), name="mmemo-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RequestError(None, "the server is shutting down", 503))

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def submit(self, rows: list[dict[str, Any]]) -> list[Job]:
        """Queue the inputs of one request, all or none: a full queue is a 503 (busy) for the whole request."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        if self._queue.qsize() + len(rows) > self.max_queue:
            raise RequestError(None, f"the server is busy ({self._queue.qsize()} inputs waiting); retry shortly", 503)
        loop = asyncio.get_running_loop()
        jobs = [Job(row, loop.create_future()) for row in rows]
        for job in jobs:
            self._queue.put_nowait(job)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                if self.arriving <= 0:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [job for job in batch if not job.future.done()]  # requests that gave up while queued
            if not batch:
                continue
            for job in batch:
                job.started = True
            try:
                preds = await loop.run_in_executor(self._executor, self._predict, [job.row for job in batch])
            except Exception as exc:  # a bug: every request of the batch answers 500, the server goes on
                log.exception("batch of %d inputs failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.batches += 1
            self.inputs += len(batch)
            for job, pred in zip(batch, preds):
                if not job.future.done():
                    job.future.set_result(pred)

    def _predict(self, rows: list[dict[str, Any]]) -> list[Prediction]:
        media = any(row.get(f) is not None for row in rows for f in MEDIA_FIELDS)
        return self.recognizer.predict_batch(rows, batch_size=len(rows), progress=False,
                                             num_threads=None if media else 1)
