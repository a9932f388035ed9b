"""Scenes of the shapes world: coloured shapes with their boxes, attributes and relations.

A scene is pure data drawn from a seeded generator, so the same seed always gives the same scene.
Everything that the renderer, the task emitters and the oracle backends need is in here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tg_data.box import Box

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 180),
    "orange": (245, 135, 30),
}
# Side of a shape's box as a fraction of the image's shorter side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.13, 0.18), "medium": (0.22, 0.28), "large": (0.32, 0.40)}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (150, 150, 150),
    "black": (25, 25, 25),
    "beige": (225, 215, 190),
}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "bigger than", "next to")


@dataclass(frozen=True)
class ShapesConfig:
    """What scenes look like; every field is a knob of the generator."""

    image_size: int = 224  # the longer side, in pixels
    aspect: tuple[float, float] = (0.75, 1.333)  # width / height range
    min_shapes: int = 1
    max_shapes: int = 5
    kinds: tuple[str, ...] = KINDS
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    textured: float = 0.5  # probability of a textured background
    gap: float = 0.03  # minimal empty space between shapes, fraction of the shorter side
    next_to: float = 0.12  # boxes closer than this (fraction of the padded side) are "next to"
    # side of each size's box as a fraction of the shorter image side (default: SIZES)
    size_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(SIZES))

    def __post_init__(self) -> None:
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes, got {self.min_shapes}, {self.max_shapes}")
        for name, values, known in (
            ("kinds", self.kinds, KINDS),
            ("colours", self.colours, tuple(COLOURS)),
            ("sizes", self.sizes, tuple(SIZES)),
            ("backgrounds", self.backgrounds, tuple(BACKGROUNDS)),
        ):
            unknown = set(values) - set(known)
            if unknown or not values:
                raise ValueError(f"shapes config {name}: unknown {sorted(unknown)} (known: {list(known)})")
        for name in self.sizes:
            lo, hi = self.size_ranges.get(name, (0.0, 0.0))
            if not 0 < lo <= hi <= 1:
                raise ValueError(
                    f"shapes config size_ranges[{name!r}] must be (lo, hi) with 0 < lo <= hi <= 1, "
                    f"got {self.size_ranges.get(name)}"
                )
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    # pixel box in the original image: x1, y1, x2, y2
    px: tuple[float, float, float, float]
    rotation: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.px
        return (x2 - x1) * (y2 - y1)


@dataclass(frozen=True)
class Scene:
    id: str
    width: int
    height: int
    background: str
    textured: bool
    texture_seed: int
    shapes: tuple[Shape, ...] = field(default_factory=tuple)

    @cached_property
    def _boxes(self) -> tuple[Box, ...]:
        # computed once: expressions and relations ask for the same boxes thousands of times
        return tuple(Box.from_pixels(*s.px, self.width, self.height) for s in self.shapes)

    def box(self, i: int) -> Box:
        """The box of shape ``i`` in the project's frame (normalised to the padded square)."""
        return self._boxes[i]

    @property
    def boxes(self) -> list[Box]:
        return list(self._boxes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = [dict(asdict(s), box=self.box(i).to_list()) for i, s in enumerate(self.shapes)]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        shapes = tuple(
            Shape(s["kind"], s["colour"], s["size"], tuple(s["px"]), s.get("rotation", 0.0)) for s in d["shapes"]
        )
        return cls(d["id"], d["width"], d["height"], d["background"], d["textured"], d["texture_seed"], shapes)


def _disjoint(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def generate_scene(scene_id: str, rng: np.random.Generator, config: ShapesConfig) -> Scene:
    """One scene: 1..N non-overlapping shapes with distinct (colour, kind, size) triples."""
    aspect = float(rng.uniform(*config.aspect))
    if aspect >= 1:
        width, height = config.image_size, max(32, round(config.image_size / aspect))
    else:
        width, height = max(32, round(config.image_size * aspect)), config.image_size
    short = min(width, height)
    n_target = int(rng.integers(config.min_shapes, config.max_shapes + 1))
    shapes: list[Shape] = []
    used: set[tuple[str, str, str]] = set()
    attempts = 0
    while len(shapes) < n_target and attempts < 200:
        attempts += 1
        kind = str(rng.choice(config.kinds))
        colour = str(rng.choice(config.colours))
        size = str(rng.choice(config.sizes))
        if (kind, colour, size) in used:
            continue
        lo, hi = config.size_ranges[size]
        side = float(rng.uniform(lo, hi)) * short
        w = side * (float(rng.uniform(0.85, 1.15)) if kind in ("triangle", "diamond") else 1.0)
        h = side
        if w >= width - 2 or h >= height - 2:
            continue
        x1 = float(rng.uniform(1, width - w - 1))
        y1 = float(rng.uniform(1, height - h - 1))
        px = (round(x1, 2), round(y1, 2), round(x1 + w, 2), round(y1 + h, 2))
        if all(_disjoint(px, s.px, config.gap * short) for s in shapes):
            shapes.append(Shape(kind, colour, size, px, float(rng.uniform(0, 360)) if kind == "star" else 0.0))
            used.add((kind, colour, size))
    background = str(rng.choice(config.backgrounds))
    textured = bool(rng.random() < config.textured)
    return Scene(scene_id, width, height, background, textured, int(rng.integers(0, 2**31 - 1)), tuple(shapes))


# relations ----------------------------------------------------------------------------------------
def relation_holds(scene: Scene, rel: str, i: int, j: int, config: ShapesConfig | None = None) -> bool:
    """Whether ``shapes[i] rel shapes[j]`` holds; spatial relations need full separation on the axis."""
    if i == j:
        return False
    a, b = scene.box(i), scene.box(j)
    if rel == "left of":
        return a.x2 <= b.x1
    if rel == "right of":
        return a.x1 >= b.x2
    if rel == "above":
        return a.y2 <= b.y1
    if rel == "below":
        return a.y1 >= b.y2
    if rel == "bigger than":
        return scene.shapes[i].area >= 1.5 * scene.shapes[j].area
    if rel == "next to":
        threshold = (config or ShapesConfig()).next_to
        dx = max(0.0, b.x1 - a.x2, a.x1 - b.x2)
        dy = max(0.0, b.y1 - a.y2, a.y1 - b.y2)
        return math.hypot(dx, dy) < threshold
    raise ValueError(f"unknown relation {rel!r}; known: {list(RELATIONS)}")


def relations(scene: Scene, config: ShapesConfig | None = None) -> list[tuple[int, str, int]]:
    """Every triple ``(i, relation, j)`` that holds in the scene."""
    n = len(scene.shapes)
    return [
        (i, rel, j)
        for i in range(n)
        for j in range(n)
        if i != j
        for rel in RELATIONS
        if relation_holds(scene, rel, i, j, config)
    ]
