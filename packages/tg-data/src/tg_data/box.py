"""Boxes normalised to the padded square image, the one coordinate frame the whole project speaks.

The model sees every image padded to a square around its centre, so a box is stored as fractions
of that square's side. Converters here translate to and from the frames other tools use: pixels of
the original image, a 0-1000 integer grid, and pixels of a resized image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-6


class BoxError(ValueError):
    """A box that cannot exist: inverted, empty, non-finite or outside the image."""


@dataclass(frozen=True, slots=True)
class PadGeometry:
    """Where an original ``width`` x ``height`` image sits inside its centred padded square."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise BoxError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    @property
    def offset_x(self) -> float:
        return (self.side - self.width) / 2

    @property
    def offset_y(self) -> float:
        return (self.side - self.height) / 2


def _check_finite(values: Sequence[float], what: str) -> None:
    for v in values:
        if type(v) is float and math.isfinite(v):  # the common case, checked first: boxes are built by the million
            continue
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(float(v)):
            raise BoxError(f"{what}: coordinates must be finite numbers, got {list(values)}")


@dataclass(frozen=True, slots=True)
class Box:
    """``x1, y1, x2, y2`` in [0, 1], relative to the padded square image.

    Construction validates; ``Box.clipped`` clips into range first for callers that ask for it.
    """

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        values = (self.x1, self.y1, self.x2, self.y2)
        _check_finite(values, "box")
        for v in values:
            if v < -TOLERANCE or v > 1 + TOLERANCE:
                raise BoxError(
                    f"box {list(values)}: values must lie in [0, 1] (normalised to the padded square); "
                    "convert pixel or 0-1000 coordinates with Box.from_pixels / Box.from_grid1000"
                )
        if not (self.x1 < self.x2 and self.y1 < self.y2):
            raise BoxError(f"box {list(values)}: need x1 < x2 and y1 < y2 (is it inverted or empty?)")
        # Values within the tolerance of the border are snapped onto it.
        for name, v in zip(("x1", "y1", "x2", "y2"), values, strict=True):
            object.__setattr__(self, name, min(1.0, max(0.0, float(v))))

    # construction -------------------------------------------------------------------------------
    @classmethod
    def clipped(cls, x1: float, y1: float, x2: float, y2: float) -> Box:
        """Clip each value into [0, 1] first; still refuses a box that clipping makes empty."""
        _check_finite((x1, y1, x2, y2), "box")
        return cls(*(min(1.0, max(0.0, float(v))) for v in (x1, y1, x2, y2)))

    @classmethod
    def from_list(cls, values: Sequence[float], clip: bool = False) -> Box:
        if len(values) != 4:
            raise BoxError(f"a box needs 4 values [x1, y1, x2, y2], got {len(values)}: {list(values)}")
        return cls.clipped(*values) if clip else cls(*values)

    @classmethod
    def from_pixels(
        cls, x1: float, y1: float, x2: float, y2: float, width: int, height: int, clip: bool = False
    ) -> Box:
        """From pixel corners of the original ``width`` x ``height`` image."""
        _check_finite((x1, y1, x2, y2), "pixel box")
        g = PadGeometry(width, height)
        if clip:
            x1, x2 = (min(float(width), max(0.0, v)) for v in (x1, x2))
            y1, y2 = (min(float(height), max(0.0, v)) for v in (y1, y2))
        s = g.side
        return cls.from_list(
            ((x1 + g.offset_x) / s, (y1 + g.offset_y) / s, (x2 + g.offset_x) / s, (y2 + g.offset_y) / s),
            clip=clip,
        )

    @classmethod
    def from_xywh_pixels(
        cls, x: float, y: float, w: float, h: float, width: int, height: int, clip: bool = False
    ) -> Box:
        """From a COCO-style ``[x, y, w, h]`` pixel box."""
        return cls.from_pixels(x, y, x + w, y + h, width, height, clip=clip)

    @classmethod
    def from_image_relative(
        cls, x1: float, y1: float, x2: float, y2: float, width: int, height: int, clip: bool = False
    ) -> Box:
        """From fractions of the original (unpadded) image, as in LLaVA's caps/boxes files."""
        return cls.from_pixels(x1 * width, y1 * height, x2 * width, y2 * height, width, height, clip=clip)

    @classmethod
    def from_grid1000(
        cls, values: Sequence[int | float], width: int, height: int, clip: bool = False
    ) -> Box:
        """From the 0-1000 integer grid over the original image (Qwen-VL, Kosmos-2 style)."""
        if len(values) != 4:
            raise BoxError(f"a grid box needs 4 values, got {list(values)}")
        return cls.from_image_relative(*(float(v) / 1000 for v in values), width, height, clip=clip)

    @classmethod
    def from_resized_pixels(
        cls,
        values: Sequence[float],
        resized: tuple[int, int],
        original: tuple[int, int],
        clip: bool = False,
    ) -> Box:
        """From absolute pixels on a resized copy of the image (Qwen2-VL style)."""
        if len(values) != 4:
            raise BoxError(f"a pixel box needs 4 values, got {list(values)}")
        (rw, rh), (w, h) = resized, original
        sx, sy = w / rw, h / rh
        x1, y1, x2, y2 = values
        return cls.from_pixels(x1 * sx, y1 * sy, x2 * sx, y2 * sy, w, h, clip=clip)

    # conversion ---------------------------------------------------------------------------------
    def to_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Pixel corners in the original image (may reach into the padding; use ``clip_to_image``)."""
        g = PadGeometry(width, height)
        s = g.side
        return (
            self.x1 * s - g.offset_x,
            self.y1 * s - g.offset_y,
            self.x2 * s - g.offset_x,
            self.y2 * s - g.offset_y,
        )

    def to_image_relative(self, width: int, height: int) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.to_pixels(width, height)
        return x1 / width, y1 / height, x2 / width, y2 / height

    def to_grid1000(self, width: int, height: int) -> tuple[int, int, int, int]:
        rel = self.to_image_relative(width, height)
        return tuple(round(min(1.0, max(0.0, v)) * 1000) for v in rel)  # type: ignore[return-value]

    def to_resized_pixels(
        self, resized: tuple[int, int], original: tuple[int, int]
    ) -> tuple[float, float, float, float]:
        (rw, rh), (w, h) = resized, original
        x1, y1, x2, y2 = self.to_pixels(w, h)
        return x1 * rw / w, y1 * rh / h, x2 * rw / w, y2 * rh / h

    def clip_to_image(self, width: int, height: int) -> Box:
        """The part of the box that lies on the original image, not its padding."""
        g = PadGeometry(width, height)
        s = g.side
        lo_x, hi_x = g.offset_x / s, (g.offset_x + width) / s
        lo_y, hi_y = g.offset_y / s, (g.offset_y + height) / s
        return Box(
            max(self.x1, lo_x), max(self.y1, lo_y), min(self.x2, hi_x), min(self.y2, hi_y)
        )

    # geometry -----------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def _as_boxes(a: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BoxError(f"expected boxes of shape (N, 4), got {arr.shape}")
    return arr


def iou_pairs(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for each ``i`` (any consistent frame: normalised or pixels)."""
    a, b = _as_boxes(a), _as_boxes(b)
    if a.shape != b.shape:
        raise BoxError(f"iou_pairs needs equal shapes, got {a.shape} and {b.shape}")
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_matrix(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): shape (N, M)."""
    a, b = _as_boxes(a), _as_boxes(b)
    n, m = len(a), len(b)
    return iou_pairs(np.repeat(a, m, axis=0), np.tile(b, (n, 1))).reshape(n, m)
