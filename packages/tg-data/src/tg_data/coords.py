"""Coordinate text: the one renderer and the one parser of boxes written as text.

Rendered: ``[x1,y1,x2,y2]`` with exactly three decimals. Parsed from model output tolerantly
(spaces, a missing bracket), but never guessed: values outside [0, 1] (0-1000 grids, pixels),
inverted boxes and malformed groups are reported as misses, not rescaled or repaired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tg_data.box import Box, BoxError

DECIMALS = 3

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
# A bracketed group: anything between [ and ] that holds a digit (candidate box, maybe malformed).
_BRACKETED = re.compile(r"\[([^\[\]]*\d[^\[\]]*)\]")
_FOUR = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*$")
# A maximal run of comma-separated numbers outside brackets, a bracket optional at either end (a
# lost bracket). The atomic group keeps the run whole, so five numbers never pass as four.
_RUN = re.compile(rf"(?:\[\s*)?(?>{_NUM}(?:\s*,\s*{_NUM})+)(?:\s*\])?")
_NUMBER = re.compile(_NUM)


def format_value(v: float) -> str:
    return f"{v:.{DECIMALS}f}"


def render_box(box: Box) -> str:
    """``Box(0.1, 0.2, 0.3, 0.4)`` -> ``[0.100,0.200,0.300,0.400]``."""
    return "[" + ",".join(format_value(v) for v in box.to_list()) + "]"


@dataclass(frozen=True, slots=True)
class Miss:
    """A span of text that looked like a box but is not a valid one."""

    text: str
    start: int
    reason: str


@dataclass(slots=True)
class ParsedBoxes:
    boxes: list[Box] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)

    @property
    def first(self) -> Box | None:
        return self.boxes[0] if self.boxes else None


def _to_box(values: tuple[str, ...]) -> Box:
    floats = [float(v) for v in values]
    for v in floats:
        if v < 0 or v > 1:
            raise BoxError(f"value {v} is outside [0, 1] (0-1000 or pixel coordinates are not guessed)")
    return Box(*floats)


def parse_boxes(text: str) -> ParsedBoxes:
    """Every box in ``text``, in order of appearance, plus every box-like span that is not valid.

    Box-like: a bracketed group holding a digit, or a bare run of four or more comma-separated
    numbers. Shorter bare runs ("1, 2 and 3") are prose, not boxes.
    """
    out = ParsedBoxes()
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, int, Box | None, str]] = []
    for m in _BRACKETED.finditer(text):
        inner = _FOUR.match(m.group(1))
        if inner is None:
            found.append((m.start(), m.end(), None, "not four comma-separated numbers"))
        else:
            try:
                found.append((m.start(), m.end(), _to_box(inner.groups()), ""))
            except BoxError as e:
                found.append((m.start(), m.end(), None, str(e)))
        taken.append((m.start(), m.end()))
    for m in _RUN.finditer(text):
        if any(s < m.end() and m.start() < e for s, e in taken):
            continue
        numbers = _NUMBER.findall(m.group(0))
        if len(numbers) < 4:
            continue
        if len(numbers) > 4:
            found.append((m.start(), m.end(), None, f"{len(numbers)} numbers where a box has four"))
            continue
        try:
            found.append((m.start(), m.end(), _to_box(tuple(numbers)), ""))
        except BoxError as e:
            found.append((m.start(), m.end(), None, str(e)))
    for start, end, box, reason in sorted(found, key=lambda f: f[0]):
        if box is None:
            out.misses.append(Miss(text[start:end], start, reason))
        else:
            out.boxes.append(box)
            out.spans.append((start, end))
    return out


def parse_box(text: str) -> Box | None:
    """The first valid box of a model's answer, or ``None`` (a miss)."""
    return parse_boxes(text).first


def coordinate_pattern() -> re.Pattern[str]:
    """The exact rendered form, for tokenizers and constrained decoding."""
    v = rf"\d\.\d{{{DECIMALS}}}"
    return re.compile(rf"\[{v},{v},{v},{v}\]")
