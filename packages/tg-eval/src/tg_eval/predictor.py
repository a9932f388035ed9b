"""The seam between benchmarks and models: requests in, texts out, written as they finish.

Any object with ``generate_batch(requests) -> list[str]`` is a predictor: the batched predictor of
tg-infer, a client of a served model, or a scripted fake in tests. Scoring never needs one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tg_data.schema import ObjectRef, Role, Sample
from tg_eval.errors import EvalError
from tg_eval.predictions import PredictionLog


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to answer: the user text (with ``<image>`` / ``<object>`` placeholders), the
    image it refers to, and the object images its ``<object>`` placeholders stand for."""

    id: str
    prompt: str
    image: str | None = None
    objects: tuple[ObjectRef, ...] = ()
    max_new_tokens: int = 64
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_sample(cls, sample: Sample, root: str | None = None, max_new_tokens: int = 64) -> GenerationRequest:
        """The sample's first user turn as the prompt; its image resolved against ``root``."""
        from tg_data.io import resolve

        user = next((t.text for t in sample.turns if t.role == Role.USER), None)
        if user is None:
            raise EvalError(f"sample {sample.id!r} has no user turn to ask")
        image = resolve(root, sample.image) if sample.image else None
        return cls(
            id=sample.id,
            prompt=user,
            image=image,
            objects=tuple(sample.object_images),
            max_new_tokens=max_new_tokens,
            meta={"width": sample.width, "height": sample.height},
        )


@runtime_checkable
class Predictor(Protocol):
    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]: ...


@dataclass(frozen=True)
class GenerationStats:
    total: int
    skipped: int  # already in the predictions file from an earlier run
    generated: int
    recovered_partial_line: bool = False


def _batches(items: Sequence[GenerationRequest], size: int) -> Iterator[Sequence[GenerationRequest]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_predictions(
    predictor: Predictor,
    requests: Sequence[GenerationRequest],
    out: str | Path,
    batch_size: int = 8,
    progress: bool = False,
    description: str = "generating",
) -> GenerationStats:
    """Answer every request whose id is not yet in ``out``, appending ``{id, text}`` per batch."""
    if batch_size < 1:
        raise EvalError(f"batch size must be at least 1, got {batch_size}")
    seen: set[str] = set()
    for r in requests:
        if r.id in seen:
            raise EvalError(f"request id {r.id!r} appears twice; ids must be unique to resume a run")
        seen.add(r.id)
    log = PredictionLog(out)
    todo = [r for r in requests if r.id not in log.done]
    skipped = len(requests) - len(todo)
    bar = None
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        bar.start()
        task = bar.add_task(description, total=len(requests), completed=skipped)
    try:
        for batch in _batches(todo, batch_size):
            texts = predictor.generate_batch(batch)
            if not isinstance(texts, list) or len(texts) != len(batch):
                got = len(texts) if isinstance(texts, list) else type(texts).__name__
                raise EvalError(f"the predictor returned {got} texts for a batch of {len(batch)} requests")
            for r, t in zip(batch, texts, strict=True):
                if not isinstance(t, str):
                    raise EvalError(f"the predictor returned {type(t).__name__} for request {r.id!r}, expected text")
            log.append([{"id": r.id, "text": t} for r, t in zip(batch, texts, strict=True)])
            if bar is not None:
                bar.advance(task, len(batch))
    finally:
        if bar is not None:
            bar.stop()
    return GenerationStats(len(requests), skipped, len(todo), log.recovered_partial_line)
