"""The two backend protocols every implementation follows: a chat model and a box detector.

Small on purpose: a chat backend turns messages into text, a detector turns (image, labels) into
scored boxes. Everything else (prompts, parsing, caching, filters) lives outside the backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tg_synth.records import Detection


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # HTTP requests made, retries included

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.calls += other.calls


@dataclass
class ChatRequest:
    """One chat call. ``inputs`` is the structured input the prompt renders (oracles answer from it)."""

    step: str
    messages: list[dict[str, Any]]
    key: str  # the cache key: sent along so an endpoint can log which record a call serves
    inputs: dict[str, Any] = field(default_factory=dict)
    repair: bool = False


@dataclass
class ChatReply:
    content: str
    usage: Usage
    finish_reason: str = "stop"


class BackendError(RuntimeError):
    """A call that failed for good (retries spent); the record it served is quarantined."""

    def __init__(self, reason: str, usage: Usage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage or Usage()


class FatalBackendError(RuntimeError):
    """A failure no record can recover from (bad key, unknown model): the run stops, nothing is quarantined."""


@runtime_checkable
class ChatBackend(Protocol):
    name: str  # identity in cache keys: what would change the answers (model, sampling), not the URL

    async def complete(self, request: ChatRequest) -> ChatReply: ...

    async def aclose(self) -> None: ...

    def cost(self, usage: Usage) -> float: ...


@dataclass(frozen=True)
class DetectRequest:
    image_id: str
    path: str  # local path or URI of the image
    width: int
    height: int
    labels: tuple[str, ...]


@runtime_checkable
class Detector(Protocol):
    name: str
    batch_size: int

    def detect(self, requests: Sequence[DetectRequest]) -> list[list[Detection]]:
        """Boxes for each request's labels, in the project frame; one list per request, in order."""
        ...
