"""Running a step through the cache: look up (step, input hash, prompt, backend), compute on a miss.

The same step code runs in two modes. Live: misses call the backend and the finished row is
committed before anyone sees it. Replay: nothing is called; every row must be in the cache (the
assembly pass rebuilds each image's records from what the live pass committed).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from tg_synth.cache import Row, StepCache, stable_hash, step_key


class MissingResult(RuntimeError):
    """Replay found no cached row for a step (the live pass did not finish it)."""


class Executor:
    def __init__(self, cache: StepCache, replay: bool = False) -> None:
        self.cache = cache
        self.replay = replay
        self.computed: Counter[str] = Counter()  # rows this process produced, per step
        self.hits: Counter[str] = Counter()
        self._inflight: dict[str, asyncio.Future[Row]] = {}

    async def cached(
        self,
        step: str,
        inputs: Any,
        prompt: str,
        backend: str,
        compute: Callable[[str], Awaitable[Row]],
    ) -> Row:
        input_hash = stable_hash(inputs)
        key = step_key(step, input_hash, prompt, backend)
        row = self.cache.get(key)
        if row is not None:
            self.hits[step] += 1
            return row
        if self.replay:
            raise MissingResult(f"step {step}: no cached result for key {key[:12]}")
        pending = self._inflight.get(key)
        if pending is not None:  # the same input is already being computed for another image
            return await asyncio.shield(pending)
        future: asyncio.Future[Row] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warnings
        self._inflight[key] = future
        try:
            row = await compute(key)
            self.cache.put(row, input_hash, prompt, backend)
            self.computed[step] += 1
            future.set_result(row)
            return row
        except BaseException as e:
            if not future.done():
                future.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            raise
        finally:
            self._inflight.pop(key, None)
