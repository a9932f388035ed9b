"""Dynamic batching: requests that arrive within a short window are decoded as one batch.

A single worker thread owns the model. It takes the first waiting request, gathers more for up to
``max_wait_ms`` (or until ``max_batch_size``), decodes them together and resolves each request's
future; streamed text goes to each request's own callback as it is decoded.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from tg_infer.errors import InferError
from tg_infer.predictor import Predictor, Prepared
from tg_infer.requests import Generation


@dataclass
class _Job:
    prepared: Prepared
    future: Future[Generation]
    on_text: Callable[[str], None] | None = None


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    sizes: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"batches": self.batches, "requests": self.requests, "largest_batch": self.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class DynamicBatcher:
    def __init__(self, predictor: Predictor, max_batch_size: int = 16, max_wait_ms: float = 10.0,
                 max_queue: int = 1024) -> None:
        if max_batch_size < 1:
            raise InferError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise InferError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="tg-infer-batcher", daemon=True)
        self._closed = False

    def start(self) -> DynamicBatcher:
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, prepared: Prepared, on_text: Callable[[str], None] | None = None) -> Future[Generation]:
        if self._closed:
            raise InferError("the server is shutting down", status=503, code="shutting_down")
        job = _Job(prepared, Future(), on_text)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise InferError("too many requests are waiting; retry shortly", status=503, code="overloaded") from None
        return job.future

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            timeout = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._decode(batch)
            if stop:
                return

    def _decode(self, batch: list[_Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.requests += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        self.stats.sizes[len(live)] += 1
        streaming = any(j.on_text is not None for j in live)

        def on_text(i: int, delta: str) -> None:
            callback = live[i].on_text
            if callback is not None:
                callback(delta)

        try:
            results = self.predictor.generate([j.prepared for j in live], on_text=on_text if streaming else None)
        except Exception as e:  # every waiting request learns why its batch failed
            for j in live:
                j.future.set_exception(e)
            return
        for j, g in zip(live, results, strict=True):
            j.future.set_result(g)
