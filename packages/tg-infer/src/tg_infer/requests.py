"""What a caller asks for: conversation turns, an image, object images, a token budget, sampling."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from tg_data.schema import IMAGE_TOKEN, ObjectRef, Role, SampleError, Turn
from tg_infer.errors import InferError

ImageInput = Image.Image | str | Path


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; ``temperature == 0`` (the default) is greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise InferError(f"temperature must be a finite number >= 0, got {self.temperature!r}", param="temperature")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InferError(f"top_p must be in (0, 1], got {self.top_p!r}", param="top_p")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise InferError(f"top_k must be an integer >= 0, got {self.top_k!r}", param="top_k")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generation_kwargs(self) -> dict[str, Any]:
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": int(self.top_k)}


GREEDY = Sampling()


def as_turns(messages: Iterable[Turn | Mapping[str, Any] | tuple[str, str]]) -> tuple[Turn, ...]:
    """Turns from ``Turn``s, ``{"role", "content"}`` dicts (``"text"`` also accepted) or ``(role, text)`` pairs."""
    turns = []
    for k, m in enumerate(messages):
        try:
            if isinstance(m, Turn):
                turns.append(m)
            elif isinstance(m, Mapping):
                text = m.get("content", m.get("text"))
                turns.append(Turn(str(m.get("role")), text))
            else:
                role, text = m
                turns.append(Turn(role, text))
        except (SampleError, TypeError, ValueError) as e:
            raise InferError(f"message {k}: {e}; a message is {{'role': 'user'|'assistant'|'system', 'content': str}}") from None
    if not turns:
        raise InferError("no messages: give at least one user message")
    if turns[-1].role != Role.USER:
        raise InferError(f"the last message must be the user's, got {turns[-1].role!r}")
    return tuple(turns)


@dataclass(frozen=True, eq=False)
class Request:
    """One conversation to continue.

    ``image`` is the picture ``<image>`` stands for (added in front of the first user turn when no
    turn holds the placeholder). ``objects`` fill the ``<object>`` placeholders in order; their boxes
    are in the project's frame (normalised to the padded square of the image they are cut from).
    """

    turns: tuple[Turn, ...]
    image: ImageInput | None = None
    objects: tuple[ObjectRef, ...] = ()
    max_new_tokens: int = 64
    sampling: Sampling = GREEDY
    id: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise InferError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}",
                             param="max_tokens")

    @classmethod
    def ask(
        cls,
        prompt: str,
        image: ImageInput | None = None,
        objects: Sequence[ObjectRef] = (),
        **kwargs: Any,
    ) -> Request:
        """A single user question."""
        return cls(turns=(Turn(Role.USER.value, prompt),), image=image, objects=tuple(objects), **kwargs)

    def with_image_placeholder(self) -> tuple[Turn, ...]:
        """The turns, with ``<image>`` put in front of the first user turn if an image has none."""
        if self.image is None or any(IMAGE_TOKEN in t.text for t in self.turns):
            return self.turns
        turns = list(self.turns)
        first = next(i for i, t in enumerate(turns) if t.role == Role.USER)
        turns[first] = Turn(Role.USER.value, f"{IMAGE_TOKEN}\n{turns[first].text}")
        return tuple(turns)


@dataclass(frozen=True)
class Generation:
    """A finished answer: its text, its tokens, and why decoding stopped (``stop`` or ``length``)."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
