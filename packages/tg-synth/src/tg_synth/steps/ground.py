"""Step 2, object grounding: the detector boxes each listed object; S1 is built from its boxes.

Detection requests from many images are gathered into batches (up to the detector's batch size,
waiting at most ``max_wait_s`` for a batch to fill), and each batch runs in a worker thread so the
event loop keeps the chat calls of other images going meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from tg_synth.backends.base import Detector, DetectRequest
from tg_synth.cache import DONE, QUARANTINED, Row
from tg_synth.config import GroundingConfig
from tg_synth.executor import Executor
from tg_synth.filters import FilterReport, ground_objects
from tg_synth.images import ImageRef
from tg_synth.records import Detection, ImageItem, Instance

DETECT_PROMPT = "detector/v1"


class DetectorBatcher:
    """Collects single detection requests into batches for one detector."""

    def __init__(self, detector: Detector, max_wait_s: float = 0.02) -> None:
        self.detector = detector
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[DetectRequest, asyncio.Future[list[Detection]]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def detect(self, request: DetectRequest) -> list[Detection]:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        future: asyncio.Future[list[Detection]] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while True:  # drain without cancelling a get(), so no request can be lost
                while len(batch) < self.detector.batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                if len(batch) >= self.detector.batch_size or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.002)
            requests = [r for r, _ in batch]
            try:
                results = await asyncio.to_thread(self._detect_isolating_failures, requests)
                if len(results) != len(batch):
                    raise RuntimeError(f"the detector returned {len(results)} results for {len(batch)} requests")
            except Exception as e:
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _detect_isolating_failures(self, requests: Sequence[DetectRequest]) -> list[list[Detection] | Exception]:
        """The batch in one call; when it fails, each request alone, so one bad image fails alone."""
        try:
            return list(self.detector.detect(requests))
        except Exception as e:
            if len(requests) == 1:
                return [e]
        out: list[list[Detection] | Exception] = []
        for r in requests:
            try:
                out.append(self.detector.detect([r])[0])
            except Exception as e:
                out.append(e)
        return out

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


async def detect(
    ex: Executor, batcher: DetectorBatcher, item: ImageItem, image: ImageRef, labels: Sequence[str]
) -> Row:
    """Row value: ``{"detections": [{label, box, score}, ...]}`` (boxes in the project frame)."""
    inputs = {"image": image.sha256, "labels": list(labels), "size": [item.width, item.height]}

    async def compute(key: str) -> Row:
        t0 = time.perf_counter()
        request = DetectRequest(item.id, image.path, item.width, item.height, tuple(labels))
        try:
            dets = await batcher.detect(request)
        except Exception as e:
            return Row(key, "ground", QUARANTINED, reason=f"detector: {type(e).__name__}: {e}",
                       seconds=time.perf_counter() - t0)
        return Row(key, "ground", DONE, value={"detections": [d.to_dict() for d in dets]}, calls=1,
                   seconds=time.perf_counter() - t0)

    return await ex.cached("ground", inputs, DETECT_PROMPT, batcher.detector.name, compute)


def grounded_instances(
    item: ImageItem, labels: Sequence[str], row: Row, cfg: GroundingConfig, report: FilterReport
) -> list[Instance]:
    detections = [Detection.from_dict(d) for d in row.value["detections"]]
    return ground_objects(labels, detections, item.annotations, cfg, report)
