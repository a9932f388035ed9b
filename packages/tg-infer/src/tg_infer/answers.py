"""Reading boxes out of answers: every coordinate text with the phrase it belongs to, in pixels too."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tg_data.box import Box
from tg_data.coords import parse_boxes, render_box


@dataclass(frozen=True)
class FoundBox:
    """A box the model wrote: in its own frame (normalised to the padded square) and in pixels of
    the original image (clipped to it)."""

    label: str
    box: Box
    pixels: tuple[float, float, float, float]

    @property
    def coords(self) -> str:
        """The box as the model's normalised coordinate text."""
        return render_box(self.box)

    def to_dict(self) -> dict:
        return {"label": self.label, "coords": self.coords, "box": self.box.to_list(),
                "pixels": [round(v, 2) for v in self.pixels]}


@dataclass(frozen=True)
class Answer:
    """A model's reply with the boxes it mentions."""

    text: str
    boxes: list[FoundBox]
    finish_reason: str = "stop"

    def to_dict(self) -> dict:
        return {"text": self.text, "boxes": [b.to_dict() for b in self.boxes], "finish_reason": self.finish_reason}


@dataclass(frozen=True)
class Grounding:
    """The answer to "where is <expression>?": the first box of the answer, or ``None`` for a miss."""

    expression: str
    answer: str
    box: tuple[float, float, float, float] | None  # pixels of the original image
    coords: str | None  # the model's normalised coordinate text
    normalized: Box | None
    width: int
    height: int

    @property
    def found(self) -> bool:
        return self.box is not None

    def to_dict(self) -> dict:
        return {
            "expression": self.expression,
            "answer": self.answer,
            "box": None if self.box is None else [round(v, 2) for v in self.box],
            "coords": self.coords,
            "image_size": [self.width, self.height],
        }


def pixel_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` in pixels of the original ``width`` x ``height`` image, clamped onto the image."""
    x1, y1, x2, y2 = box.to_pixels(width, height)
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


_BOUNDARY = re.compile(r"[.,;:!?()\n]|\band\b|\bor\b|\bwith\b")
_LEADING = re.compile(r"^(?:(?:there (?:is|are)|the|a|an|and|of|it|is|at|in)\s+)+", re.IGNORECASE)
_TRAILING = re.compile(r"(?:\s+(?:is|are|located|found|at|in|shown|on))+\s*$", re.IGNORECASE)
MAX_LABEL_WORDS = 6


def label_before(text: str, start: int, previous_end: int = 0) -> str:
    """The phrase a box names: the words between the last clause boundary and the box."""
    segment = text[previous_end:start]
    cuts = [m.end() for m in _BOUNDARY.finditer(segment)]
    if cuts:
        segment = segment[cuts[-1]:]
    segment = _TRAILING.sub("", _LEADING.sub("", segment.strip()))
    words = segment.split()
    return " ".join(words[-MAX_LABEL_WORDS:])


def find_boxes(text: str, width: int, height: int, default_label: str = "") -> list[FoundBox]:
    """Every valid box in ``text`` with its label (``default_label`` when no words precede it)."""
    parsed = parse_boxes(text)
    found = []
    previous_end = 0
    for box, (start, end) in zip(parsed.boxes, parsed.spans, strict=True):
        label = label_before(text, start, previous_end) or default_label
        found.append(FoundBox(label, box, pixel_box(box, width, height)))
        previous_end = end
    return found
